"""The notes test component: state in Python memory, WASI probes for the sandbox tests."""

import os
import socket

import wit_world
from componentize_py_types import Err

# Module state lives in the component's linear memory: it survives between calls to one
# instance and is gone when the instance is dropped.
NOTES: list[str] = []


class WitWorld(wit_world.WitWorld):
    def add_note(self, text: str) -> int:
        NOTES.append(text)
        return len(NOTES)

    def list_notes(self) -> list[str]:
        return list(NOTES)

    def read_file(self, path: str) -> str:
        try:
            with open(path) as f:
                return f.read()
        except OSError as exc:
            raise Err(f"{type(exc).__name__}: {exc}") from None

    def write_file(self, path: str, content: str) -> int:
        try:
            with open(path, "w") as f:
                return f.write(content)
        except OSError as exc:
            raise Err(f"{type(exc).__name__}: {exc}") from None

    def get_env(self, name: str) -> str | None:
        return os.environ.get(name)

    def connect(self, host: str, port: int) -> str:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(2)
                sock.connect((host, port))
                return "connected"
        except Exception as exc:
            raise Err(f"{type(exc).__name__}: {exc}") from None

    def panic(self, message: str) -> int:
        raise RuntimeError(message)
