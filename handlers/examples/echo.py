"""The echo bot: a port of the original article's jobWorker to today's Messaging API.

Every message gets an answer prefixed with the sender's display name ("<name>さん、"), fetched
with the profile API (the rate limiter caches profiles in the store's users table): text is
echoed as "はい、<text>、ですね。", the other kinds get the article's fixed phrases. A follow
is welcomed with "ようこそ！" (the profile call records the new user); an unfollow means the
user blocked the bot: logged, and marked in the bot's per-user data.

Its functions are `async def`: the SDK then runs them on one asyncio loop (handlers/loopsession.py)
instead of worker threads, with no thread hand-off per event and per API answer (docs/benchmarks.md:
less than half the handler's CPU per echo event).

Run it as `python -m frontdesk.handlers.examples.echo` or `python handlers/examples/echo.py`.
"""
import logging

from frontdesk import Bot

log = logging.getLogger("echo")
# A window of 32: each event waits on two API calls, so a process's events/s is about its window
# over their latency; 8 capped four handlers near 1,600/s even with the sandbox's ~1 ms answers.
bot = Bot("echo", max_in_flight=32)

# The original jobWorker's phrases per content type (opType/contentType codes became types).
PHRASES = {
    "image": "写真ですね...",
    "video": "動画ですね...",
    "audio": "ボイスメッセージですね...",
    "location": "位置情報ですね...",
    "sticker": "スタンプですね",
}


async def answer(event, api, text: str) -> None:
    """Reply with the sender's display name in front, as the original did."""
    if event.user_id:
        text = (await api.profile(event.user_id))["displayName"] + "さん、" + text
    await api.reply(event.reply_token, [{"type": "text", "text": text}])


@bot.on_message("text")
async def on_text(event, api):
    await answer(event, api, "はい、" + event.message.text + "、ですね。")


@bot.on_message("*")
async def on_other_message(event, api):
    phrase = PHRASES.get(event.message.type)
    if phrase is None:  # e.g. file: the original answered nothing for unknown content types
        log.info("event=message_unanswered event_id=%s message_type=%s", event.id, event.message.type)
        return
    await answer(event, api, phrase)


@bot.on("follow")
async def on_follow(event, api):
    await answer(event, api, "ようこそ！")
    log.info("event=follow_answered event_id=%s user=%s", event.id, event.user_id)


@bot.on("unfollow")
async def on_unfollow(event, api):
    log.info("event=unfollow_recorded event_id=%s user=%s", event.id, event.user_id)
    await api.user_set_data(event.user_id, {"blocked_at": event.timestamp})


if __name__ == "__main__":
    bot.run()
