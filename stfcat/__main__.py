"""``python -m stfcat`` (also what ``torchrun ... -m stfcat run MODEL`` starts)."""

from stfcat.cli.main import app

if __name__ == "__main__":
    app()
