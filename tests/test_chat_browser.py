"""The chat page in real headless Chromium (Debian's chromium and chromium-driver, through
selenium) against `frontdesk run --sandbox` with the showcase bot: two users and a group talking
to the bot, a template button, a Flex button, a quick reply and a rich-menu area pressed and their
postbacks answered, the inspector, and markup sent by a user or the bot shown as text, never run."""
from __future__ import annotations

import shutil
import sys
import tempfile

import pytest
import requests

from frontdesk.protocol.config import SANDBOX_ACCESS_TOKEN
from tests.test_webhooks import running_system

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="no chromium and chromedriver found (Debian: apt-get install -y chromium "
                                       "chromium-driver; .ci/run installs them where apt-get exists)")
SHOWCASE = f"{sys.executable} -m frontdesk.handlers.examples.showcase"
WAIT_S = 60       # generous: the machine is shared; every wait ends as soon as its condition holds
POLL_S = 0.05     # how often a wait looks (selenium's default, 0.5 s, is most of each wait here)
XSS = '<img src=x onerror="window.pwned=1;document.title=\'pwned\'">'


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    with running_system(tmp_path_factory.mktemp("chatbrowser"), handler=SHOWCASE, handlers=1) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tempfile.mkdtemp(prefix='chat-browser-')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


class Chat:
    """The page as a user drives it."""

    def __init__(self, driver, sandbox_url: str):
        self.driver, self.url = driver, sandbox_url

    def person(self, name: str) -> str:
        answer = requests.post(f"{self.url}/sandbox/people", json={"displayName": name}, timeout=10)
        return answer.json()["userId"]

    def open(self, query: str) -> None:
        self.driver.get(f"{self.url}/chat?{query}")
        self.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-seq") is not None,
                   "the page follows the chat")

    def until(self, condition, what: str):
        return WebDriverWait(self.driver, WAIT_S, poll_frequency=POLL_S,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition, message=what)

    def type(self, text: str) -> None:
        self.driver.find_element(By.ID, "text").send_keys(text, Keys.ENTER)

    def messages(self) -> str:
        return self.driver.find_element(By.ID, "messages").text

    def shows(self, text: str) -> None:
        self.until(lambda d: text in self.messages(), f"the chat shows {text!r}")

    def press(self, css: str, label: str) -> None:
        """Click the last element matching `css` whose text is `label` (the newest message's)."""
        def found(d):
            matches = [e for e in d.find_elements(By.CSS_SELECTOR, css) if e.text.strip() == label]
            return matches[-1] if matches else None
        self.until(found, f"a {css} labelled {label!r}").click()


@pytest.fixture
def chat(system, browser):
    return Chat(browser, system[1])


def test_two_users_talk_to_the_bot_one_to_one_and_in_a_group(chat):
    aiko, ben = chat.person("Aiko"), chat.person("Ben")
    chat.open(f"user={aiko}")
    chat.type("hello there")
    chat.shows("hello there")
    chat.shows("Try one of:")                      # the showcase's answer to a word it does not know
    chat.open(f"user={ben}")
    chat.type("sticker")
    chat.shows("sticker 446 / 1988")
    assert "hello there" not in chat.messages()    # Aiko's chat is not Ben's

    group = requests.post(f"{chat.url}/sandbox/groups", json={"type": "group", "name": "Tea club",
                                                             "members": [aiko, ben]}, timeout=10).json()["chatId"]
    chat.open(f"group={group}")
    chat.driver.find_element(By.CSS_SELECTOR, f'#speakers button[data-user="{ben}"]').click()
    chat.type("mention")
    chat.until(lambda d: any(e.text == "@Ben" for e in d.find_elements(By.CSS_SELECTOR, "#messages .mention")),
               "the bot's mention of Ben")
    chat.driver.find_element(By.CSS_SELECTOR, f'#speakers button[data-user="{aiko}"]').click()
    chat.type("confirm")
    chat.shows("Cancel your reservation?")
    history = requests.get(f"{chat.url}/sandbox/chats/{group}/history", timeout=10).json()["items"]
    assert [(i["event"]["source"]["userId"], i["event"]["message"]["text"]) for i in history if i["kind"] == "user"] \
        == [(ben, "mention"), (aiko, "confirm")]
    assert [w.text for w in chat.driver.find_elements(By.CSS_SELECTOR, "#messages .row-user .who")] == ["Ben", "Aiko"]


def test_a_template_button_a_flex_button_a_quick_reply_and_a_rich_menu_area_reach_the_bot(chat):
    carol = chat.person("Carol")
    chat.open(f"user={carol}")
    chat.type("buttons")
    chat.press("#messages .template-button", "Basic")
    chat.shows("The basic plan")                   # the postback's displayText, shown as Carol's
    chat.shows("postback: plan=basic")             # the bot's answer to the postback it received

    chat.type("flex")
    chat.press("#messages .flex-button", "Reserve")
    chat.shows("postback: action=reserve&table=2")

    chat.type("quick")
    chat.press("#quick-replies .chip", "Postback")
    chat.shows("postback: quick=postback")
    chat.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#quick-replies .chip") or
               "Postback" not in d.find_element(By.ID, "quick-replies").text, "the chips gone once answered")

    chat.type("menu")
    chat.press("#richmenu .menu-area", "Carousel")
    chat.shows("postback: menu=carousel")
    postbacks = [i["event"]["postback"]["data"] for i in
                 requests.get(f"{chat.url}/sandbox/chats/{carol}/history", timeout=10).json()["items"]
                 if i["kind"] == "user" and i["event"]["type"] == "postback"]
    assert postbacks == ["plan=basic", "action=reserve&table=2", "quick=postback", "menu=carousel"]


def test_the_inspector_shows_an_events_path_through_frontdesk(chat):
    dan = chat.person("Dan")
    chat.open(f"user={dan}")
    chat.type("location")
    chat.shows("Front Desk Café")
    chat.driver.find_element(By.CSS_SELECTOR, "#messages .row-user").click()
    chat.until(lambda d: "delivered (reply)" in d.find_element(By.ID, "inspector").text, "the inspector's path")
    shown = chat.driver.find_element(By.ID, "inspector").text
    assert "webhook answered 200" in shown and "handed to handler-1" in shown
    assert "POST /v2/bot/message/reply → 200" in shown


def test_markup_from_a_user_or_the_bot_is_shown_as_text_and_runs_nothing(chat):
    eve = chat.person("Eve")
    chat.open(f"user={eve}")
    title = chat.driver.title
    chat.type(XSS)
    chat.shows("Try one of:")
    pushed = requests.post(f"{chat.url}/v2/bot/message/push", timeout=10,
                           headers={"Authorization": f"Bearer {SANDBOX_ACCESS_TOKEN}"},
                           json={"to": eve, "messages": [
                               {"type": "text", "text": XSS, "sender": {"name": XSS}},
                               {"type": "flex", "altText": XSS, "contents": {"type": "bubble", "body": {
                                   "type": "box", "layout": "vertical", "contents": [{"type": "text", "text": XSS}]}}},
                               {"type": "template", "altText": XSS, "template": {"type": "buttons", "title": XSS,
                                                                                 "text": XSS, "actions": []}}]})
    assert pushed.status_code == 200, pushed.text
    chat.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#messages .message-template")) == 1, "the push drawn")
    bubbles = [e.text for e in chat.driver.find_elements(By.CSS_SELECTOR, "#messages .bubble.text, #messages .flex-text")]
    assert bubbles.count(XSS) == 3                 # Eve's, the bot's text and the Flex text: as typed
    assert XSS in chat.driver.find_element(By.CSS_SELECTOR, "#messages .message-template").text
    assert chat.driver.find_elements(By.CSS_SELECTOR, "#messages img[src='x']") == []
    assert chat.driver.execute_script("return window.pwned === undefined") and chat.driver.title == title
