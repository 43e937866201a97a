"""api-data.line.me's message content, served on the same port: the bytes of the media messages
the generator made (webhooks.message_content) or a user of the chat page uploaded, their preview
images and transcoding status."""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from .api import Endpoint, not_found, send_json
from .webhooks import CONTENT_KINDS, message_content

PREVIEW_BYTES = 512
UPLOADS_MAX_BYTES = 64 * 1024 * 1024    # uploads kept for the content API; the oldest go first
_PREVIEWABLE = frozenset({"image", "video"})


class Uploads:
    """What users of the chat page uploaded, by message id, up to UPLOADS_MAX_BYTES in all."""

    def __init__(self, max_bytes: int = UPLOADS_MAX_BYTES):
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._held: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._bytes = 0

    def put(self, message_id: str, content_type: str, data: bytes) -> None:
        with self._lock:
            self._held[message_id] = (content_type, data)
            self._bytes += len(data)
            while self._bytes > self.max_bytes and len(self._held) > 1:
                _, (_, dropped) = self._held.popitem(last=False)
                self._bytes -= len(dropped)

    def get(self, message_id: str) -> tuple[str, bytes] | None:
        with self._lock:
            return self._held.get(message_id)


def _content(state, message_id: str) -> tuple[str, bytes] | None:
    return state.uploads.get(message_id) or message_content(message_id)


class Content(Endpoint):
    endpoint = "content"

    def on_get(self, req, resp, message_id):
        content = _content(self.state, message_id)
        if content is None:
            raise not_found()
        resp.content_type, resp.data = content


class ContentPreview(Endpoint):
    """A JPEG preview of an image or video message; 404 for other messages, as LINE."""

    def on_get(self, req, resp, message_id):
        if _content(self.state, message_id) is None or CONTENT_KINDS[int(message_id) % 10][0] not in _PREVIEWABLE:
            raise not_found()
        resp.content_type = "image/jpeg"
        resp.data = hashlib.shake_256(b"preview " + message_id.encode()).digest(PREVIEW_BYTES)


class ContentTranscoding(Endpoint):

    def on_get(self, req, resp, message_id):
        if _content(self.state, message_id) is None:
            raise not_found()
        send_json(resp, 200, {"status": "succeeded"})


ROUTES = {
    "/v2/bot/message/{message_id}/content": Content,
    "/v2/bot/message/{message_id}/content/preview": ContentPreview,
    "/v2/bot/message/{message_id}/content/transcoding": ContentTranscoding,
}
