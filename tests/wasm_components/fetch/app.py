"""The fetch test component: HTTP requests through wasi:http, and wasi:config/store reads."""

from urllib.parse import urlsplit

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import outgoing_handler, store, types


def _read(body: types.IncomingBody) -> bytes:
    stream = body.stream()
    chunks = []
    while True:
        try:
            stream.subscribe().block()
            chunks.append(stream.read(65536))
        except Err:
            return b"".join(chunks)


class WitWorld(wit_world.WitWorld):
    def http_request(self, method: str, url: str, body: str) -> str:
        parts = urlsplit(url)
        request = types.OutgoingRequest(types.Fields())
        request.set_method(types.Method_Post() if method == "POST" else types.Method_Get())
        request.set_scheme(types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http())
        request.set_authority(parts.netloc)
        request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
        outgoing = request.body()
        try:
            future = outgoing_handler.handle(request, None)
        except Err as exc:
            raise Err(f"refused: {exc.value}") from None
        if body:
            data = body.encode()
            with outgoing.write() as stream:
                for at in range(0, len(data), 4096):
                    stream.blocking_write_and_flush(data[at : at + 4096])
        types.OutgoingBody.finish(outgoing, None)
        future.subscribe().block()
        outcome = future.get()
        assert outcome is not None and isinstance(outcome, Ok)
        response = outcome.value
        if isinstance(response, Err):
            raise Err(f"failed: {response.value}")
        answer = response.value
        return f"{answer.status()} {_read(answer.consume()).decode()}"

    def config_get(self, key: str) -> str | None:
        return store.get(key)

    def config_all(self) -> list[tuple[str, str]]:
        return store.get_all()
