"""A small client for a running ComfyUI server, standard library only (the headless runner's server mode).

``ComfyClient`` wraps the HTTP routes the runner needs (``/prompt``, ``/history``, ``/view``, ``/object_info``,
``/system_stats``, ``/interrupt``); ``WebSocket`` is a minimal RFC 6455 client for ``/ws``, where ComfyUI sends
its progress messages ("executing", "progress", "executed", "execution_error", ...) as JSON text frames.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 handshake constant
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def new_prompt_id() -> str:
    """A fresh prompt id in the form every ComfyUI accepts: a canonical lowercase hyphenated UUID (ComfyUI 0.33
    refuses ``uuid4().hex``)."""
    return str(uuid.uuid4())


class ServerError(RuntimeError):
    """A ComfyUI server that cannot be reached or answers unexpectedly."""


class ComfyClient:
    """HTTP access to one ComfyUI server (``url`` like ``http://127.0.0.1:8188``)."""

    def __init__(self, url: str, timeout: float = 60.0):
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(self, path: str, body=None, timeout=None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"} if body is not None else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"FreeCure: cannot reach ComfyUI at {self.url} ({e}); start it or fix --server") from e

    def get_json(self, path: str, timeout=None):
        code, raw = self._request(path, timeout=timeout)
        if code != 200:
            raise ServerError(f"FreeCure: GET {self.url}{path} answered {code}: {raw[:300]!r}")
        return json.loads(raw)

    def post_json(self, path: str, body: dict) -> tuple[int, dict]:
        """POST JSON; returns (status, decoded body or {"raw": text})."""
        code, raw = self._request(path, body)
        try:
            return code, json.loads(raw) if raw else {}
        except ValueError:
            return code, {"raw": raw.decode(errors="replace")}

    def system_stats(self) -> dict:
        return self.get_json("/system_stats")

    def version(self) -> str | None:
        """The server's ComfyUI version (``/system_stats``), None when it does not say."""
        try:
            return self.system_stats().get("system", {}).get("comfyui_version")
        except (ServerError, ValueError):
            return None

    def object_info(self, types) -> dict:
        """``/object_info`` entries of the given node types (types the server lacks are left out)."""
        info = {}
        for name in sorted(types):
            code, raw = self._request("/object_info/" + urllib.parse.quote(name, safe=""))
            if code == 200:
                info.update({k: v for k, v in json.loads(raw).items() if k == name})
        return info

    def queue(self, prompt: dict, client_id: str, prompt_id: str | None = None) -> tuple[int, dict]:
        body = {"prompt": prompt, "client_id": client_id}
        if prompt_id:
            body["prompt_id"] = prompt_id
        return self.post_json("/prompt", body)

    def history(self, prompt_id: str) -> dict | None:
        """The finished prompt's history entry, None while it is queued or running."""
        entry = self.get_json("/history/" + urllib.parse.quote(prompt_id)).get(prompt_id)
        if not entry:
            return None
        status = entry.get("status") or {}
        if status.get("completed") or status.get("status_str") in ("success", "error"):
            return entry
        return None

    def view(self, item: dict) -> bytes:
        """Bytes of an output file (an ``images`` entry: filename, subfolder, type)."""
        query = urllib.parse.urlencode({"filename": item["filename"], "subfolder": item.get("subfolder", ""),
                                        "type": item.get("type", "output")})
        code, raw = self._request("/view?" + query)
        if code != 200:
            raise ServerError(f"FreeCure: {self.url}/view?{query} answered {code}")
        return raw

    def upload_image(self, name: str, data: bytes, subfolder: str = "") -> str:
        """POST /upload/image (overwriting): the name LoadImage then takes ("subfolder/name" when in one)."""
        boundary = uuid.uuid4().hex
        fields = [("overwrite", "true"), ("type", "input"), ("subfolder", subfolder)]
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields)
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(self.url + "/upload/image", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise ServerError(f"FreeCure: {self.url}/upload/image refused {name} ({e.code}: {e.read()[:200]!r})") from e
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"FreeCure: cannot reach ComfyUI at {self.url} ({e}); start it or fix --server") from e
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer.get("name", name)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Ask the server to stop its running prompt (only ``prompt_id`` when given); errors are ignored."""
        try:
            self.post_json("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})
        except ServerError:
            pass

    def websocket(self, client_id: str, timeout: float = 10.0) -> "WebSocket":
        parts = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = (parts.path or "") + "/ws?clientId=" + urllib.parse.quote(client_id)
        return WebSocket.connect(f"{scheme}://{parts.netloc}{path}", timeout=timeout)


class WebSocket:
    """Minimal WebSocket client: handshake, reading (fragmented) text/binary messages, ping/pong, close."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.parts: list[bytes] = []
        self.part_op = None

    @classmethod
    def connect(cls, url: str, timeout: float = 10.0) -> "WebSocket":
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
        if parts.scheme == "wss":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + ("?" + parts.query if parts.query else "")
        sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                raise ServerError(f"FreeCure: {url} closed the WebSocket handshake")
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode(errors="replace").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if lines[0].split()[1:2] != ["101"] or headers.get("sec-websocket-accept") != accept:
            sock.close()
            raise ServerError(f"FreeCure: {url} refused the WebSocket upgrade: {lines[0]}")
        ws = cls(sock)
        ws.buf = rest
        return ws

    def _frame(self):
        """(fin, opcode, payload) of the first whole frame in the buffer, consumed; None if incomplete."""
        b = self.buf
        if len(b) < 2:
            return None
        fin, op, masked, n = b[0] >> 7, b[0] & 0x0F, b[1] >> 7, b[1] & 0x7F
        pos = 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack(">Q", b[2:10])[0], 10
        mask = b""
        if masked:
            if len(b) < pos + 4:
                return None
            mask, pos = b[pos:pos + 4], pos + 4
        if len(b) < pos + n:
            return None
        payload = b[pos:pos + n]
        if masked:
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        self.buf = b[pos + n:]
        return fin, op, payload

    def send(self, opcode: int, payload: bytes = b"") -> None:
        """Send one masked frame (clients must mask)."""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(head + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))

    def recv(self, timeout: float):
        """The next message as (opcode, payload), or None when ``timeout`` seconds pass without one.

        Raises ``ConnectionError`` when the server closes the connection.
        """
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(65536)
                except (socket.timeout, TimeoutError):
                    return None
                if not chunk:
                    raise ConnectionError("FreeCure: the ComfyUI server closed the WebSocket")
                self.buf += chunk
                continue
            fin, op, payload = frame
            if op == OP_PING:
                self.send(OP_PONG, payload)
            elif op == OP_CLOSE:
                raise ConnectionError("FreeCure: the ComfyUI server closed the WebSocket")
            elif op in (OP_TEXT, OP_BINARY, OP_CONT):
                if op != OP_CONT:
                    self.part_op, self.parts = op, []
                self.parts.append(payload)
                if fin:
                    return self.part_op, b"".join(self.parts)

    def recv_json(self, timeout: float):
        """The next JSON text message (binary messages such as previews are skipped), or None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.0, deadline - time.monotonic()))
            if msg is None:
                return None
            op, payload = msg
            if op == OP_TEXT:
                try:
                    return json.loads(payload)
                except ValueError:
                    continue

    def close(self) -> None:
        try:
            self.send(OP_CLOSE, struct.pack(">H", 1000))
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
