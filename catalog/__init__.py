"""The YAML catalog (papers/ and datasets/), shipped in the wheel as package data."""
