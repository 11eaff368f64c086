"""A payload's language, cheaply, for the campaign document."""

import pytest

from detectors.language import UNDETERMINED, language_of


@pytest.mark.parametrize(("text", "language"), [
    ("the tap water was poisoned by the council last week", "en"),
    ("la vacuna contra el sarampión causa autismo en los niños", "es"),
    ("le gouvernement a truqué les élections de dimanche dernier", "fr"),
    ("die Regierung hat die Wahl am Sonntag manipuliert und das ist nicht gut", "de"),
    ("il governo ha truccato le elezioni di domenica e non lo dice", "it"),
    ("o governo esconde a verdade sobre as vacinas", "pt"),
    ("l'Àrea 51 s'utilitza per estudiar els extraterrestres i les seves naus", "ca"),
    ("Правительство скрывает правду о вакцинах", "ru"),  # noqa: RUF001
    ("政府隐瞒了疫苗的真相", "zh"),
    ("ワクチンの真実を隠している", "ja"),
])
def test_languages_are_told_apart(text: str, language: str) -> None:
    assert language_of(text) == language


def test_nothing_to_go_on_is_undetermined() -> None:
    assert language_of("12345 !!!") == UNDETERMINED
    assert language_of("") == UNDETERMINED
