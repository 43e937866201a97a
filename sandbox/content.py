"""api-data.line.me's message content, served on the same port: the bytes of the media messages
the generator made (webhooks.message_content), their preview images and transcoding status."""
from __future__ import annotations

import hashlib

from .api import Endpoint, not_found, send_json
from .webhooks import CONTENT_KINDS, message_content

PREVIEW_BYTES = 512
_PREVIEWABLE = frozenset({"image", "video"})


class Content(Endpoint):
    endpoint = "content"

    def on_get(self, req, resp, message_id):
        content = message_content(message_id)
        if content is None:
            raise not_found()
        resp.content_type, resp.data = content


class ContentPreview(Endpoint):
    """A JPEG preview of an image or video message; 404 for other messages, as LINE."""

    def on_get(self, req, resp, message_id):
        if message_content(message_id) is None or CONTENT_KINDS[int(message_id) % 10][0] not in _PREVIEWABLE:
            raise not_found()
        resp.content_type = "image/jpeg"
        resp.data = hashlib.shake_256(b"preview " + message_id.encode()).digest(PREVIEW_BYTES)


class ContentTranscoding(Endpoint):

    def on_get(self, req, resp, message_id):
        if message_content(message_id) is None:
            raise not_found()
        send_json(resp, 200, {"status": "succeeded"})


ROUTES = {
    "/v2/bot/message/{message_id}/content": Content,
    "/v2/bot/message/{message_id}/content/preview": ContentPreview,
    "/v2/bot/message/{message_id}/content/transcoding": ContentTranscoding,
}
