"""The showcase bot: answers keywords with every kind of LINE message, for the sandbox's chat page.

Send `help` (or anything it does not know) for the list: `flex` (a Flex bubble), `carousel` (a
Flex carousel), `buttons`, `confirm`, `columns` (a template carousel), `images` (an image
carousel), `imagemap`, `quick` (quick-reply chips for every action a chip can have), `sticker`,
`location`, `image`, `video`, `audio`, `emoji` (LINE emoji in a text), `mention` (a textV2 naming
the sender), `sender` (a message under another name and icon), `slow` (the loading animation,
then an answer) and `menu` (links a rich menu to the user; a follow does it too). Every postback
it receives — from a button, a Flex button, a quick-reply chip, a rich-menu area, a date picker —
is answered with what it carried, so a tap is seen reaching the bot.

The rich menus are made through the API (`api.call`), their images drawn here as PNGs: menu "a"
on `menu` or a follow, menu "b" when a rich-menu switch to its alias first finds none (LINE then
sends the postback with `status: RICHMENU_ALIAS_ID_NOTFOUND`); the two switch to each other
(aliases `showcase-a` and `showcase-b`). LINE allows 100 rich menus an hour, so frontdesk's rate
limiter spaces two creations by 36 s: menu "b"'s first call may wait that long.

Run it as `frontdesk run --sandbox --handler "python -m frontdesk.handlers.examples.showcase"`.
"""
import logging
import struct
import time
import zlib

from frontdesk import Bot
from frontdesk.handlers.sdk import ApiError

log = logging.getLogger("showcase")
bot = Bot("showcase", max_in_flight=8)

PICTURES = "https://example.com/showcase"    # where the pictures would be (LINE wants https URLs)
KEYWORDS = ("flex", "carousel", "buttons", "confirm", "columns", "images", "imagemap", "quick", "sticker",
            "location", "image", "video", "audio", "emoji", "mention", "sender", "slow", "menu")
MENU_SIZE = (2500, 843)
MENU_COLOURS = {"a": ((6, 199, 85), (3, 150, 64), (40, 90, 200)),
                "b": ((200, 90, 40), (120, 60, 160), (6, 199, 85))}


# --- the messages ------------------------------------------------------------------------------------
def text(words: str, **more) -> dict:
    return {"type": "text", "text": words, **more}


def postback(label: str, data: str, display: str | None = None) -> dict:
    return {"type": "postback", "label": label, "data": data, **({"displayText": display} if display else {})}


def flex_bubble() -> dict:
    def row(label: str, value: str) -> dict:
        return {"type": "box", "layout": "baseline", "spacing": "sm", "contents": [
            {"type": "text", "text": label, "color": "#aaaaaa", "size": "sm", "flex": 1},
            {"type": "text", "text": value, "wrap": True, "color": "#666666", "size": "sm", "flex": 5}]}

    stars = [{"type": "icon", "size": "sm", "url": f"{PICTURES}/star.png"} for _ in range(4)]
    return {"type": "flex", "altText": "Front Desk Café", "contents": {
        "type": "bubble",
        "hero": {"type": "image", "url": f"{PICTURES}/cafe.jpg", "size": "full", "aspectRatio": "20:13",
                 "aspectMode": "cover", "action": {"type": "uri", "uri": "https://example.com/cafe"}},
        "body": {"type": "box", "layout": "vertical", "contents": [
            {"type": "text", "text": "Front Desk Café", "weight": "bold", "size": "xl"},
            {"type": "box", "layout": "baseline", "margin": "md", "contents": stars + [
                {"type": "text", "text": "4.0", "size": "sm", "color": "#999999", "margin": "md", "flex": 0}]},
            {"type": "box", "layout": "vertical", "margin": "lg", "spacing": "sm", "contents": [
                row("Place", "1-1 Marunouchi, Chiyoda-ku, Tokyo"), row("Time", "10:00 - 23:00")]}]},
        "footer": {"type": "box", "layout": "vertical", "spacing": "sm", "flex": 0, "contents": [
            {"type": "button", "style": "primary", "height": "sm",
             "action": postback("Reserve", "action=reserve&table=2", "Reserve a table for two")},
            {"type": "button", "style": "link", "height": "sm",
             "action": {"type": "uri", "label": "Website", "uri": "https://example.com/cafe"}}]}}}


def flex_carousel() -> dict:
    def item(n: int, name: str, price: str, colour: str) -> dict:
        return {"type": "bubble", "size": "micro",
                "hero": {"type": "image", "url": f"{PICTURES}/{name.lower()}.jpg", "size": "full",
                         "aspectRatio": "4:3", "aspectMode": "cover"},
                "body": {"type": "box", "layout": "vertical", "spacing": "sm", "paddingAll": "13px", "contents": [
                    {"type": "text", "text": name, "weight": "bold", "size": "sm", "wrap": True},
                    {"type": "text", "text": price, "size": "xs", "color": colour},
                    {"type": "button", "style": "primary", "height": "sm", "color": colour,
                     "action": postback("Order", f"action=order&item={n}", f"One {name.lower()}, please")}]}}

    return {"type": "flex", "altText": "Today's menu", "contents": {"type": "carousel", "contents": [
        item(1, "Latte", "¥480", "#06c755"), item(2, "Matcha", "¥520", "#2e7d32"),
        item(3, "Cheesecake", "¥560", "#c2185b")]}}


def buttons() -> dict:
    return {"type": "template", "altText": "Choose a plan", "template": {
        "type": "buttons", "thumbnailImageUrl": f"{PICTURES}/plans.jpg", "imageAspectRatio": "rectangle",
        "title": "Plans", "text": "Pick what fits you", "actions": [
            postback("Basic", "plan=basic", "The basic plan"),
            {"type": "message", "label": "Ask a question", "text": "help"},
            {"type": "datetimepicker", "label": "Book a call", "data": "datetime=call", "mode": "datetime",
             "initial": "2026-12-24T10:00", "min": "2026-01-01T00:00", "max": "2027-12-31T23:59"},
            {"type": "uri", "label": "Pricing page", "uri": "https://example.com/pricing"}]}}


def confirm() -> dict:
    return {"type": "template", "altText": "Are you sure?", "template": {
        "type": "confirm", "text": "Cancel your reservation?", "actions": [
            postback("Yes", "cancel=yes", "Yes, cancel it"), {"type": "message", "label": "No", "text": "No"}]}}


def columns() -> dict:
    def column(name: str, about: str) -> dict:
        return {"thumbnailImageUrl": f"{PICTURES}/{name.lower()}.jpg", "title": name, "text": about,
                "actions": [postback("Choose", f"room={name.lower()}", f"The {name} room"),
                            {"type": "uri", "label": "Photos", "uri": f"https://example.com/rooms/{name.lower()}"}]}

    return {"type": "template", "altText": "Rooms", "template": {"type": "carousel", "columns": [
        column("Garden", "Quiet, by the garden"), column("Tower", "High floor, city view")]}}


def images() -> dict:
    return {"type": "template", "altText": "Gallery", "template": {"type": "image_carousel", "columns": [
        {"imageUrl": f"{PICTURES}/lobby.jpg", "action": postback("Lobby", "gallery=lobby")},
        {"imageUrl": f"{PICTURES}/pool.jpg", "action": {"type": "message", "label": "Pool", "text": "pool"}}]}}


def imagemap() -> dict:
    return {"type": "imagemap", "baseUrl": f"{PICTURES}/map", "altText": "Floor map",
            "baseSize": {"width": 1040, "height": 520}, "actions": [
                {"type": "message", "text": "lobby", "area": {"x": 0, "y": 0, "width": 520, "height": 520}},
                {"type": "uri", "linkUri": "https://example.com/floor", "area": {"x": 520, "y": 0,
                                                                               "width": 520, "height": 520}}]}


def quick() -> dict:
    chips = [{"type": "message", "label": "Flex", "text": "flex"},
             postback("Postback", "quick=postback", "Tapped a chip"),
             {"type": "datetimepicker", "label": "Pick a date", "data": "datetime=quick", "mode": "date"},
             {"type": "camera", "label": "Camera"}, {"type": "cameraRoll", "label": "Photos"},
             {"type": "location", "label": "Location"}]
    return text("Quick replies: tap one", quickReply={"items": [{"type": "action", "action": a} for a in chips]})


def help_text() -> dict:
    chips = [{"type": "action", "action": {"type": "message", "label": word, "text": word}}
             for word in KEYWORDS[:13]]
    return text("Try one of: " + ", ".join(KEYWORDS), quickReply={"items": chips})


ANSWERS = {
    "flex": flex_bubble, "carousel": flex_carousel, "buttons": buttons, "confirm": confirm, "columns": columns,
    "images": images, "imagemap": imagemap, "quick": quick,
    "sticker": lambda: {"type": "sticker", "packageId": "446", "stickerId": "1988"},
    "location": lambda: {"type": "location", "title": "Front Desk Café", "address": "1-1 Marunouchi, Tokyo",
                         "latitude": 35.681236, "longitude": 139.767125},
    "image": lambda: {"type": "image", "originalContentUrl": f"{PICTURES}/cafe.jpg",
                      "previewImageUrl": f"{PICTURES}/cafe-small.jpg"},
    "video": lambda: {"type": "video", "originalContentUrl": f"{PICTURES}/tour.mp4",
                      "previewImageUrl": f"{PICTURES}/tour.jpg", "trackingId": "tour"},
    "audio": lambda: {"type": "audio", "originalContentUrl": f"{PICTURES}/welcome.m4a", "duration": 4000},
    "emoji": lambda: text("$ Welcome $", emojis=[
        {"index": 0, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "001"},
        {"index": 10, "productId": "5ac1bfd5040ab15980c9b435", "emojiId": "002"}]),
    "sender": lambda: text("Hello from the front desk.", sender={"name": "Concierge",
                                                                 "iconUrl": f"{PICTURES}/concierge.png"}),
}


# --- the rich menus ----------------------------------------------------------------------------------
def png(width: int, height: int, colours) -> bytes:
    """A PNG of vertical stripes, one per colour: the rich menu's image (the page draws the labels)."""
    stripe = width // len(colours)
    row = b"\x00" + b"".join(bytes(colour) * (stripe if n < len(colours) - 1 else width - stripe * n)
                             for n, colour in enumerate(colours))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * height, 9))
            + chunk(b"IEND", b""))


def menu_object(name: str) -> dict:
    width, height = MENU_SIZE
    third = width // 3

    def area(n: int, action: dict) -> dict:
        return {"bounds": {"x": third * n, "y": 0, "width": third if n < 2 else width - 2 * third, "height": height},
                "action": action}

    other = "b" if name == "a" else "a"
    first = {"type": "message", "label": "Flex", "text": "flex"} if name == "a" else \
        {"type": "message", "label": "Help", "text": "help"}
    return {"size": {"width": width, "height": height}, "selected": True, "name": f"showcase {name}",
            "chatBarText": "Menu" if name == "a" else "More", "areas": [
                area(0, first),
                area(1, postback("Carousel" if name == "a" else "Gallery",
                                 "menu=carousel" if name == "a" else "menu=gallery",
                                 "Show me the carousel" if name == "a" else None)),
                area(2, {"type": "richmenuswitch", "label": f"Menu {other.upper()}",
                         "richMenuAliasId": f"showcase-{other}", "data": f"switched-to={other}"})]}


def rich_menu(api, name: str) -> str | None:
    """The id of rich menu `name` (alias showcase-<name>), made with its image if there is none yet.
    A failed call raises ApiError (LINE's 4xx included), except the 404 of a missing alias."""
    alias = f"showcase-{name}"
    try:
        found = api.call("GET", f"/v2/bot/richmenu/alias/{alias}")["body"]
        if isinstance(found, dict) and found.get("richMenuId"):
            return found["richMenuId"]
    except ApiError as exc:
        if exc.status != 404:
            raise
    made = api.call("POST", "/v2/bot/richmenu", body=menu_object(name))
    menu_id = made["body"].get("richMenuId") if isinstance(made["body"], dict) else None
    if not menu_id:
        log.warning("event=richmenu_not_made answer=%r", made["body"])
        return None
    api.call("POST", f"/v2/bot/richmenu/{menu_id}/content", body=png(*MENU_SIZE, MENU_COLOURS[name]),
             data_api=True, content_type="image/png")
    try:
        api.call("POST", "/v2/bot/richmenu/alias", body={"richMenuAliasId": alias, "richMenuId": menu_id})
    except ApiError as exc:   # another handler made it meanwhile (400): use theirs
        if exc.status != 400:
            raise
        api.call("DELETE", f"/v2/bot/richmenu/{menu_id}")
        return api.call("GET", f"/v2/bot/richmenu/alias/{alias}")["body"].get("richMenuId")
    return menu_id


def link_menu(api, user: str) -> bool:
    """Link menu "a" to the user (menu "b" is made when a switch to it first finds no alias)."""
    menu_id = rich_menu(api, "a")
    if menu_id is None:
        return False
    api.call("POST", f"/v2/bot/user/{user}/richmenu/{menu_id}")
    return True


# --- the handlers -------------------------------------------------------------------------------------
def mention(event) -> dict:
    user = event.user_id
    if not user:
        return text("A mention needs a sender.")
    return {"type": "textV2", "text": "Hello {you}, welcome!",
            "substitution": {"you": {"type": "mention", "mentionee": {"type": "user", "userId": user}}}}


@bot.on_message("text")
def on_text(event, api):
    word = event.message.text.strip().lower()
    if word == "menu":
        linked = event.user_id and link_menu(api, event.user_id)
        api.reply(event.reply_token, text("Your menu is below the chat." if linked else "No menu could be made."))
    elif word == "slow":
        if (event.source or {}).get("type") == "user":
            api.call("POST", "/v2/bot/chat/loading/start", body={"chatId": event.user_id, "loadingSeconds": 5})
        time.sleep(1.5)   # the work the animation is shown for
        api.reply(event.reply_token, text("That took a while."))
    elif word == "mention":
        api.reply(event.reply_token, mention(event))
    else:
        api.reply(event.reply_token, ANSWERS.get(word, help_text)())


@bot.on("postback")
def on_postback(event, api):
    params = event.postback.get("params") or {}
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    api.reply(event.reply_token, text(f"postback: {event.postback.data}" + (f" ({shown})" if shown else "")))
    alias = params.get("newRichMenuAliasId", "")
    if params.get("status") == "RICHMENU_ALIAS_ID_NOTFOUND" and alias in ("showcase-a", "showcase-b"):
        # LINE allows 100 rich menus an hour: the rate limiter may hold this call a while
        if rich_menu(api, alias[-1]) and event.user_id:
            api.push(event.user_id, text(f"Menu {alias[-1].upper()} is ready: tap the switch again."))


@bot.on("follow")
def on_follow(event, api):
    try:
        link_menu(api, event.user_id)
    except ApiError as exc:   # the welcome matters more than the menu
        log.warning("event=richmenu_not_linked reason=%s", exc)
    api.reply(event.reply_token, help_text())


@bot.on_message("image")
def on_image(event, api):
    content = api.content(event.message.id)
    api.reply(event.reply_token, text(f"Got your picture: {len(content['data'])} bytes of {content['content_type']}."))


@bot.on_message("location")
def on_location(event, api):
    api.reply(event.reply_token, text(f"You are at {event.message.get('title') or event.message.get('address')}."))


@bot.on_message("sticker")
def on_sticker(event, api):
    api.reply(event.reply_token, {"type": "sticker", "packageId": "446", "stickerId": "1989"})


@bot.on("join")
def on_join(event, api):
    api.reply(event.reply_token, text("Thanks for inviting me! Say help to see what I can do."))


@bot.on("memberJoined")
def on_member_joined(event, api):
    api.reply(event.reply_token, text("Welcome to the group!"))


if __name__ == "__main__":
    bot.run()
