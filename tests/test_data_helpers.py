"""Helpers shared by the data/fetch tests: a local HTTP server and a temporary catalog.

Imported by the data tests (a plain module, so it stays within the data tests' files); the
test at the end checks the server itself.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import yaml

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


class Server:
    """``routes[path] = (behaviour, payload)``; behaviours: ok, status, truncate, hang, stall, flaky."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, object]] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _send(self, body: bytes, length: int | None = None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(length if length is not None else len(body)))
                self.end_headers()
                if self.command == "GET":
                    self.wfile.write(body)
                    self.wfile.flush()

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                behaviour, payload = routes.get(self.path, ("status", 404))
                if behaviour == "ok":
                    self._send(payload)
                elif behaviour == "status":
                    self.send_response(int(payload))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif behaviour == "truncate":
                    self._send(payload[: len(payload) // 2], length=len(payload))
                    self.close_connection = True
                elif behaviour == "hang":
                    time.sleep(float(payload))
                    self.close_connection = True
                elif behaviour == "stall":  # headers and half the body, then silence (read timeout)
                    body, secs = payload
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    time.sleep(float(secs))
                    self.close_connection = True
                elif behaviour == "flaky":
                    if hits[self.path] == 1:
                        self.send_response(500)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    else:
                        self._send(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tif_bytes(values: np.ndarray, tmp: Path, **kw) -> bytes:
    from stfcat.data.readers import write_geotiff

    p = write_geotiff(tmp / f"t{time.perf_counter_ns()}.tif", values, **kw)
    data = p.read_bytes()
    p.unlink()
    return data


def dataset_yaml(catalog: Path, ds_id: str, access: dict, **extra) -> Path:
    """Write a minimal valid dataset YAML into ``catalog/datasets``."""
    doc = {
        "id": ds_id,
        "name": f"Test {ds_id}",
        "abbreviation": ds_id.upper(),
        "group": "synthetic",
        "fine": {"name": "fine sensor", "resolution": {"value": 30, "unit": "m"}, "bands": ["red", "nir"]},
        "coarse": {
            "name": "coarse sensor",
            "resolution": {"value": 480, "unit": "m"},
            "bands": ["red", "nir"],
        },
        "region": "nowhere",
        "format": "GeoTIFF",
        "landing_page": f"https://example.org/{ds_id}",
        "licence": "CC0-1.0",
        "scale_factor": 0.0001,
        "coarse_on_fine_grid": True,
        "access": access,
    }
    doc.update(extra)
    (catalog / "datasets").mkdir(parents=True, exist_ok=True)
    path = catalog / "datasets" / f"{ds_id}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_local_server_behaviours():
    import requests

    srv = Server()
    try:
        srv.routes["/a"] = ("ok", b"hello")
        srv.routes["/b"] = ("status", 500)
        assert requests.get(srv.url("/a"), timeout=5).content == b"hello"
        assert requests.get(srv.url("/b"), timeout=5).status_code == 500
        assert requests.get(srv.url("/missing"), timeout=5).status_code == 404
        assert srv.hits == {"/a": 1, "/b": 1, "/missing": 1}
    finally:
        srv.close()
