"""The showcase bot's messages and rich menus are what LINE accepts (the sandbox's own checks,
in-process), and its rich menu images have the menus' size."""
from __future__ import annotations

import pytest

from frontdesk.handlers.examples import showcase
from frontdesk.sandbox.api import LineError, Validator
from frontdesk.sandbox.richmenu import _image_size, check_rich_menu


@pytest.mark.parametrize("word", sorted(showcase.ANSWERS) + ["help"])
def test_every_answer_is_a_message_line_accepts(word):
    check = Validator()
    check.messages({"messages": [showcase.ANSWERS.get(word, showcase.help_text)()]})
    check.raise_if_failed()


def test_every_keyword_has_an_answer_or_its_own_handling():
    assert set(showcase.KEYWORDS) - set(showcase.ANSWERS) == {"menu", "slow", "mention"}


@pytest.mark.parametrize("name", ["a", "b"])
def test_the_rich_menus_pass_lines_checks_and_their_images_have_their_size(name):
    menu = showcase.menu_object(name)
    check_rich_menu(menu)
    image = showcase.png(*showcase.MENU_SIZE, showcase.MENU_COLOURS[name])
    assert _image_size(image, "image/png") == (menu["size"]["width"], menu["size"]["height"])
    assert len(image) < 1024 * 1024     # LINE's limit for a rich menu image
    switch = menu["areas"][2]["action"]
    assert switch["type"] == "richmenuswitch" and switch["richMenuAliasId"] == f"showcase-{'b' if name == 'a' else 'a'}"


def test_a_menu_with_an_area_outside_is_refused_by_the_same_check():
    menu = showcase.menu_object("a")
    menu["areas"][2]["bounds"]["width"] += 1
    with pytest.raises(LineError):
        check_rich_menu(menu)
