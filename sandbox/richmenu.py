"""Rich menus, stateful as on LINE: create, validate, get, list, delete; the image (upload once,
download); the default menu; per-user links, one by one and in bulk; aliases; batch operations
with their progress.

LINE's rules kept here: a rich menu object is checked in full (size 800-2,500 x at least 250
pixels, width/height at least 1.45, up to 20 areas inside it, each with an action; name up to
300 characters, chat bar text up to 14); an image, JPEG or PNG of at most 1 MB and exactly the
menu's size, can be uploaded once; a menu is linked to users, made default or given an alias
only once it has its image; at most 1,000 menus per channel. Deleting a menu unlinks it from
its users, cancels it as default and deletes its aliases.
"""
from __future__ import annotations

import os
import re
import struct
import threading

from .api import USER_ID_PATTERN, Endpoint, LineError, Validator, iso_time, not_found, read_json, send_json

MAX_MENUS = 1000
MAX_AREAS = 20
MAX_IMAGE_BYTES = 1024 * 1024
MAX_BULK_USERS = 500
MAX_BATCH_OPERATIONS = 1000
BATCH_ONGOING_MS = 1000          # a batch reports `ongoing` this long, then `succeeded`
ALIAS_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
RESUME_KEY_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,100}")
IMAGE_TYPES = ("image/jpeg", "image/png")
ACTION_TYPES = frozenset({"postback", "message", "uri", "datetimepicker", "camera", "cameraRoll", "location",
                          "richmenuswitch", "clipboard"})
NO_IMAGE = "must upload richmenu image before applying it to user"


def new_rich_menu_id() -> str:
    return "richmenu-" + os.urandom(16).hex()


class RichMenus:
    """Menus, images, the default, per-user links, aliases and batches, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.menus: dict[str, dict] = {}                  # id -> the rich menu object with its id
        self.images: dict[str, tuple[str, bytes]] = {}   # id -> (content type, bytes)
        self.default: str | None = None
        self.links: dict[str, str] = {}                   # user id -> menu id
        self.aliases: dict[str, str] = {}                 # alias id -> menu id
        self.batches: dict[str, float] = {}               # request id -> accepted at (ms)

    def menu(self, menu_id: str) -> dict:
        """The menu (call with the lock held); 404 when there is none."""
        menu = self.menus.get(menu_id)
        if menu is None:
            raise not_found()
        return menu

    def applicable(self, menu_id: str) -> None:
        """A menu that may be linked, made default or aliased: it exists and has its image."""
        self.menu(menu_id)
        if menu_id not in self.images:
            raise LineError(400, NO_IMAGE)

    def delete(self, menu_id: str) -> None:
        self.menu(menu_id)
        del self.menus[menu_id]
        self.images.pop(menu_id, None)
        if self.default == menu_id:
            self.default = None
        self.links = {user: menu for user, menu in self.links.items() if menu != menu_id}
        self.aliases = {alias: menu for alias, menu in self.aliases.items() if menu != menu_id}


# --- validation --------------------------------------------------------------------------------------------
def _integer(check: Validator, obj: dict, key: str, prop: str, minimum: int, maximum: int | None = None) -> bool:
    value = obj.get(key)
    if value is None:
        check.fail(prop, "must be specified")
    elif isinstance(value, bool) or not isinstance(value, int):
        check.fail(prop, "must be an integer")
    elif value < minimum or (maximum is not None and value > maximum):
        check.fail(prop, f"must be between {minimum} and {maximum}" if maximum else f"must be at least {minimum}")
    else:
        return True
    return False


def check_rich_menu(body: dict) -> None:
    """LINE's checks of a rich menu object; LineError 400 naming each failing property."""
    check = Validator()
    size = body.get("size")
    width = height = None
    if not isinstance(size, dict):
        check.fail("size", "must be specified")
    elif _integer(check, size, "width", "size.width", 800, 2500) & _integer(check, size, "height", "size.height", 250):
        width, height = size["width"], size["height"]
        if width / height < 1.45:
            check.fail("size", "width / height must be at least 1.45")
    if not isinstance(body.get("selected"), bool):
        check.fail("selected", "must be specified" if body.get("selected") is None else "must be a boolean")
    check.string(body, "name", "name", 300)
    check.string(body, "chatBarText", "chatBarText", 14)
    areas = body.get("areas")
    if not isinstance(areas, list):
        check.fail("areas", "must be specified" if areas is None else "must be an array")
    elif len(areas) > MAX_AREAS:
        check.fail("areas", f"Size must be between 0 and {MAX_AREAS}")
    else:
        for index, area in enumerate(areas):
            _check_area(check, area, f"areas[{index}]", width, height)
    check.raise_if_failed()


def _check_area(check: Validator, area, prop: str, width: int | None, height: int | None) -> None:
    if not isinstance(area, dict):
        check.fail(prop, "must be an object")
        return
    bounds = area.get("bounds")
    if not isinstance(bounds, dict):
        check.fail(f"{prop}.bounds", "must be specified")
    else:
        fine = [_integer(check, bounds, key, f"{prop}.bounds.{key}", 1 if key in ("width", "height") else 0)
                for key in ("x", "y", "width", "height")]
        if all(fine) and width is not None and (bounds["x"] + bounds["width"] > width
                                                or bounds["y"] + bounds["height"] > height):
            check.fail(f"{prop}.bounds", "must be inside the rich menu")
    action = area.get("action")
    if not isinstance(action, dict):
        check.fail(f"{prop}.action", "must be specified")
    elif action.get("type") not in ACTION_TYPES:
        check.fail(f"{prop}.action.type", f"Must be one of the following values: [{', '.join(sorted(ACTION_TYPES))}]")
    elif action["type"] == "richmenuswitch":
        check.string(action, "richMenuAliasId", f"{prop}.action.richMenuAliasId", 32)
        check.string(action, "data", f"{prop}.action.data", 300)


def _user_ids(check: Validator, body: dict) -> None:
    users = body.get("userIds")
    if not isinstance(users, list) or not 1 <= len(users) <= MAX_BULK_USERS:
        check.fail("userIds", f"Size must be between 1 and {MAX_BULK_USERS}")
    elif not all(isinstance(u, str) and USER_ID_PATTERN.fullmatch(u) for u in users):
        check.fail("userIds", "must be user IDs (U followed by 32 hex digits)")


def _image_size(data: bytes, content_type: str) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame; None if unreadable."""
    if content_type == "image/png":
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
            return struct.unpack(">II", data[16:24])
        return None
    offset = 2 if data[:2] == b"\xff\xd8" else len(data)
    while offset + 9 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker, length = data[offset + 1], struct.unpack(">H", data[offset + 2:offset + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
            return width, height
        offset += 2 + length
    return None


# --- resources ---------------------------------------------------------------------------------------------
class MenuEndpoint(Endpoint):
    @property
    def menus(self) -> RichMenus:
        return self.state.richmenus


class RichMenuCollection(MenuEndpoint):
    """POST /v2/bot/richmenu: create (100 per hour)."""
    endpoint = "richmenu_create"

    def on_post(self, req, resp):
        body = read_json(req)
        check_rich_menu(body)
        menu_id = new_rich_menu_id()
        with self.menus.lock:
            if len(self.menus.menus) >= MAX_MENUS:
                raise LineError(400, f"The number of rich menus exceeds the limit of {MAX_MENUS}")
            self.menus.menus[menu_id] = {"richMenuId": menu_id, **{k: body[k] for k in
                                         ("size", "selected", "name", "chatBarText", "areas")}}
        send_json(resp, 200, {"richMenuId": menu_id})


class RichMenuValidate(MenuEndpoint):
    def on_post(self, req, resp):
        check_rich_menu(read_json(req))
        send_json(resp, 200, {})


class RichMenuList(MenuEndpoint):
    def on_get(self, req, resp):
        with self.menus.lock:
            send_json(resp, 200, {"richmenus": list(self.menus.menus.values())})


class RichMenu(MenuEndpoint):
    """GET and DELETE (100 per hour) /v2/bot/richmenu/{richMenuId}."""
    endpoints = {"DELETE": "richmenu_delete"}

    def on_get(self, req, resp, menu_id):
        with self.menus.lock:
            send_json(resp, 200, self.menus.menu(menu_id))

    def on_delete(self, req, resp, menu_id):
        with self.menus.lock:
            self.menus.delete(menu_id)
        send_json(resp, 200, {})


class RichMenuImage(MenuEndpoint):
    """api-data.line.me's /v2/bot/richmenu/{richMenuId}/content: upload once, download."""

    def on_get(self, req, resp, menu_id):
        with self.menus.lock:
            self.menus.menu(menu_id)
            image = self.menus.images.get(menu_id)
        if image is None:
            raise not_found()
        resp.content_type, resp.data = image

    def on_post(self, req, resp, menu_id):
        content_type = (req.content_type or "").split(";")[0].strip().lower()
        if content_type not in IMAGE_TYPES:
            raise LineError(415, "The Content-Type must be image/jpeg or image/png")
        if (req.content_length or 0) > MAX_IMAGE_BYTES:
            raise LineError(413, f"The image must be at most {MAX_IMAGE_BYTES} bytes")
        data = req.bounded_stream.read(MAX_IMAGE_BYTES + 1)   # chunked bodies announce no length
        if len(data) > MAX_IMAGE_BYTES:
            raise LineError(413, f"The image must be at most {MAX_IMAGE_BYTES} bytes")
        with self.menus.lock:
            size = self.menus.menu(menu_id)["size"]
            if menu_id in self.menus.images:
                raise LineError(400, "An image has already been uploaded to the richmenu")
            if _image_size(data, content_type) != (size["width"], size["height"]):
                raise LineError(400, f"The image must be a {content_type} of {size['width']}x{size['height']} "
                                     f"pixels, the rich menu's size")
            self.menus.images[menu_id] = (content_type, data)
        send_json(resp, 200, {})


class DefaultRichMenu(MenuEndpoint):
    """GET and DELETE /v2/bot/user/all/richmenu."""

    def on_get(self, req, resp):
        with self.menus.lock:
            default = self.menus.default
        if default is None:
            raise not_found("no default richmenu")
        send_json(resp, 200, {"richMenuId": default})

    def on_delete(self, req, resp):
        with self.menus.lock:
            self.menus.default = None
        send_json(resp, 200, {})


class SetDefaultRichMenu(MenuEndpoint):
    """POST /v2/bot/user/all/richmenu/{richMenuId}."""

    def on_post(self, req, resp, menu_id):
        with self.menus.lock:
            self.menus.applicable(menu_id)
            self.menus.default = menu_id
        send_json(resp, 200, {})


def _user(user_id: str) -> str:
    if not USER_ID_PATTERN.fullmatch(user_id):
        raise LineError(400, "The request has 1 error(s)",
                        [{"message": "must be a user ID (U followed by 32 hex digits)", "property": "userId"}])
    return user_id


class UserRichMenu(MenuEndpoint):
    """GET and DELETE /v2/bot/user/{userId}/richmenu: the menu linked to that user (not the default)."""

    def on_get(self, req, resp, user_id):
        with self.menus.lock:
            menu_id = self.menus.links.get(_user(user_id))
        if menu_id is None:
            raise not_found("the user has no richmenu")
        send_json(resp, 200, {"richMenuId": menu_id})

    def on_delete(self, req, resp, user_id):
        with self.menus.lock:
            self.menus.links.pop(_user(user_id), None)
        send_json(resp, 200, {})


class LinkUserRichMenu(MenuEndpoint):
    """POST /v2/bot/user/{userId}/richmenu/{richMenuId}."""

    def on_post(self, req, resp, user_id, menu_id):
        with self.menus.lock:
            self.menus.applicable(menu_id)
            self.menus.links[_user(user_id)] = menu_id
        send_json(resp, 200, {})


class BulkLink(MenuEndpoint):
    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        check.string(body, "richMenuId", "richMenuId")
        _user_ids(check, body)
        check.raise_if_failed()
        with self.menus.lock:
            self.menus.applicable(body["richMenuId"])
            self.menus.links.update(dict.fromkeys(body["userIds"], body["richMenuId"]))
        send_json(resp, 202, {})


class BulkUnlink(MenuEndpoint):
    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        _user_ids(check, body)
        check.raise_if_failed()
        with self.menus.lock:
            for user in body["userIds"]:
                self.menus.links.pop(user, None)
        send_json(resp, 202, {})


class AliasCreate(MenuEndpoint):
    """POST /v2/bot/richmenu/alias."""

    def on_post(self, req, resp):
        body = read_json(req)
        check = Validator()
        alias = body.get("richMenuAliasId")
        if not isinstance(alias, str) or not ALIAS_PATTERN.fullmatch(alias):
            check.fail("richMenuAliasId", "must match [a-z0-9_-]{1,32}")
        check.string(body, "richMenuId", "richMenuId")
        check.raise_if_failed()
        with self.menus.lock:
            if alias in self.menus.aliases:
                raise LineError(400, "conflict richmenu alias id")
            self.menus.applicable(body["richMenuId"])
            self.menus.aliases[alias] = body["richMenuId"]
        send_json(resp, 200, {})


class AliasList(MenuEndpoint):
    def on_get(self, req, resp):
        with self.menus.lock:
            aliases = [{"richMenuAliasId": a, "richMenuId": m} for a, m in self.menus.aliases.items()]
        send_json(resp, 200, {"aliases": aliases})


class Alias(MenuEndpoint):
    """GET, POST (update) and DELETE (100 per hour) /v2/bot/richmenu/alias/{richMenuAliasId}."""
    endpoints = {"DELETE": "richmenu_alias_delete"}

    def _menu_of(self, alias: str) -> str:
        menu_id = self.menus.aliases.get(alias)
        if menu_id is None:
            raise not_found()
        return menu_id

    def on_get(self, req, resp, alias):
        with self.menus.lock:
            send_json(resp, 200, {"richMenuAliasId": alias, "richMenuId": self._menu_of(alias)})

    def on_post(self, req, resp, alias):
        body = read_json(req)
        check = Validator()
        check.string(body, "richMenuId", "richMenuId")
        check.raise_if_failed()
        with self.menus.lock:
            self._menu_of(alias)
            self.menus.applicable(body["richMenuId"])
            self.menus.aliases[alias] = body["richMenuId"]
        send_json(resp, 200, {})

    def on_delete(self, req, resp, alias):
        with self.menus.lock:
            self._menu_of(alias)
            del self.menus.aliases[alias]
        send_json(resp, 200, {})


def _check_batch(menus: RichMenus, body: dict) -> list[dict]:
    """The operations of a batch request, checked (menus must exist); call with the lock held."""
    check = Validator()
    operations = body.get("operations")
    if not isinstance(operations, list) or not 1 <= len(operations) <= MAX_BATCH_OPERATIONS:
        check.fail("operations", f"Size must be between 1 and {MAX_BATCH_OPERATIONS}")
        operations = []
    for index, operation in enumerate(operations):
        prop = f"operations[{index}]"
        kind = operation.get("type") if isinstance(operation, dict) else None
        if kind not in ("link", "unlink", "unlinkAll"):
            check.fail(f"{prop}.type", "Must be one of the following values: [link, unlink, unlinkAll]")
            continue
        for key in {"link": ("from", "to"), "unlink": ("from",), "unlinkAll": ()}[kind]:
            if operation.get(key) not in menus.menus:
                check.fail(f"{prop}.{key}", "must be the id of an existing rich menu")
    key = body.get("resumeRequestKey")
    if key is not None and (not isinstance(key, str) or not RESUME_KEY_PATTERN.fullmatch(key)):
        check.fail("resumeRequestKey", "must match [a-zA-Z0-9_-]{1,100}")
    check.raise_if_failed()
    return operations


class Batch(MenuEndpoint):
    """POST /v2/bot/richmenu/batch (3 per hour): link, unlink, unlinkAll over every linked user.
    The operations take effect at once; progress reports `ongoing` for BATCH_ONGOING_MS first."""
    endpoint = "richmenu_batch"

    def on_post(self, req, resp):
        body = read_json(req)
        with self.menus.lock:
            for operation in _check_batch(self.menus, body):
                links = self.menus.links
                if operation["type"] == "unlinkAll":
                    links.clear()
                elif operation["type"] == "unlink":
                    self.menus.links = {u: m for u, m in links.items() if m != operation["from"]}
                else:
                    self.menus.links = {u: operation["to"] if m == operation["from"] else m
                                        for u, m in links.items()}
            self.menus.batches[req.context.request_id] = self.state.now_ms()
        send_json(resp, 202, {})


class BatchValidate(MenuEndpoint):
    def on_post(self, req, resp):
        body = read_json(req)
        with self.menus.lock:
            _check_batch(self.menus, body)
        send_json(resp, 200, {})


class BatchProgress(MenuEndpoint):
    def on_get(self, req, resp):
        request_id = req.get_param("requestId")
        if not request_id:
            raise LineError(400, "The request has 1 error(s)", [{"message": "must be specified",
                                                                   "property": "requestId"}])
        with self.menus.lock:
            accepted = self.menus.batches.get(request_id)
        if accepted is None:
            raise not_found()
        answer = {"phase": "ongoing", "acceptedTime": iso_time(accepted)}
        if self.state.now_ms() - accepted >= BATCH_ONGOING_MS:
            answer.update(phase="succeeded", completedTime=iso_time(accepted + BATCH_ONGOING_MS))
        send_json(resp, 200, answer)


ROUTES = {
    "/v2/bot/richmenu": RichMenuCollection,
    "/v2/bot/richmenu/validate": RichMenuValidate,
    "/v2/bot/richmenu/list": RichMenuList,
    "/v2/bot/richmenu/{menu_id}": RichMenu,
    "/v2/bot/richmenu/{menu_id}/content": RichMenuImage,
    "/v2/bot/user/all/richmenu": DefaultRichMenu,
    "/v2/bot/user/all/richmenu/{menu_id}": SetDefaultRichMenu,
    "/v2/bot/user/{user_id}/richmenu": UserRichMenu,
    "/v2/bot/user/{user_id}/richmenu/{menu_id}": LinkUserRichMenu,
    "/v2/bot/richmenu/bulk/link": BulkLink,
    "/v2/bot/richmenu/bulk/unlink": BulkUnlink,
    "/v2/bot/richmenu/alias": AliasCreate,
    "/v2/bot/richmenu/alias/list": AliasList,
    "/v2/bot/richmenu/alias/{alias}": Alias,
    "/v2/bot/richmenu/batch": Batch,
    "/v2/bot/richmenu/validate/batch": BatchValidate,
    "/v2/bot/richmenu/progress/batch": BatchProgress,
}
