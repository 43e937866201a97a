"""A small SDK bot for the transcript tests: what it sends depends on the text, so a transcript can
hold replies, pushes to the chat, Flex and quick replies, and events that become dead letters.
Its first argument is the prefix of its replies (default "bot: "): the same bot "changed".

text `push`: a reply, then a push to the chat (the group, room or user) · `flex`: a Flex bubble
with a quick reply · `fail`: a non-retryable nack (a dead letter, nothing sent) · `quiet`:
nothing · anything else: "<prefix><display name>: <text>". A postback is answered with its data.
"""
import sys

from frontdesk import Bot, Nack

PREFIX = sys.argv[1] if len(sys.argv) > 1 else "bot: "
bot = Bot("chatbot", max_in_flight=4)

FLEX = {"type": "flex", "altText": "a card",
        "contents": {"type": "bubble", "body": {"type": "box", "layout": "vertical", "contents": [
            {"type": "text", "text": "Hello", "weight": "bold"},
            {"type": "button", "action": {"type": "postback", "label": "Buy", "data": "buy=1"}}]}},
        "quickReply": {"items": [{"type": "action", "action": {"type": "message", "label": "Yes", "text": "yes"}}]}}


@bot.on_message("text")
def on_text(event, api):
    text = event.message.text
    if text == "fail":
        raise Nack("asked to fail", retry=False)
    if text == "quiet":
        return
    if text == "flex":
        api.reply(event.reply_token, [FLEX])
        return
    name = api.profile(event.user_id)["displayName"]
    api.reply(event.reply_token, f"{PREFIX}{name}: {text}")
    if text == "push":
        api.push(event.key, "pushed to the chat")


@bot.on("postback")
def on_postback(event, api):
    api.reply(event.reply_token, f"{PREFIX}postback {event.postback.data}")


if __name__ == "__main__":
    bot.run()
