"""The official SDK's echo example as a frontdesk handler: each text comes back as a reply and
nothing else happens (no profile look-up, unlike the bundled echo bot), so `--suite compare` runs
the same bot on both sides and compares only where the work is done. Its window is the bundled
echo's 32: a handler waiting on an API answer holds a thread and nothing else, where the SDK's
pattern holds one of its server's 16 threads and LINE's webhook request with it."""
from frontdesk import Bot


def main() -> None:
    bot = Bot("sdk-echo", max_in_flight=32)   # built here: a Bot takes over stdout for its frames

    @bot.on_message("text")
    def on_text(event, api):
        api.reply(event.reply_token, [{"type": "text", "text": event.message.text}])

    bot.run()


if __name__ == "__main__":
    main()
