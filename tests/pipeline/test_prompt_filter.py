"""The default prompt filter against a table of probes with expected outcomes: inflections, look-alike
letters, leetspeak, separators, over-blocking of harmless phrases, and the known misses (other languages,
transpositions) recorded as such so that a change in either direction shows."""
from __future__ import annotations

import pytest

from unclip.moderation import Moderator
from unclip.prompt_filter import PromptFilter, find_spans, readings, skeleton, term_keys

PROBES = [
    # inflections and stems
    ("pornography", "sexual"), ("a pornographic scene", "sexual"), ("nudity", "sexual"), ("nudes", "sexual"),
    ("suicidal thoughts", "self-harm"), ("massacred villagers", "violence"), ("decapitated", "violence/graphic"),
    # Unicode look-alikes, invisible characters, fullwidth and mathematical letters
    ("nud\u0435", "sexual"), ("p\u03bfrn", "sexual"), ("\u0455uicide", "self-harm"), ("p\u200born", "sexual"),
    ("\uff50\uff4f\uff52\uff4e", "sexual"), ("\U0001d429\U0001d428\U0001d42b\U0001d427", "sexual"), ("NÜDE", "sexual"),
    # leetspeak, separators, repeats
    ("p0rn", "sexual"), ("$uicide", "self-harm"), ("5u1c1d3", "self-harm"), ("k!ll yourself", "harassment"),
    ("g.0.r.3", "violence/graphic"), ("s e l f - h a r m", "self-harm"), ("selfharm", "self-harm"),
    ("kill   yourself", "harassment"), ("k y s", "harassment"), ("PORN!", "sexual"), ("n_u_d_e", "sexual"),
    # harmless text, including phrases that hold a term
    ("naked mole rat", None), ("seen with the naked eye", None), ("an analysis of nazi propaganda", None),
    ("a red star at the top left", None), ("skill", None), ("killer whale", None), ("therapist", None),
    ("a grape and a scrape", None), ("analysis of gore-tex jackets", "violence/graphic"),  # over-blocks: "gore"
    ("nazi propaganda poster", "hate"),
    # known misses (other languages, transpositions): recorded so that an improvement shows up here
    ("desnudo", None), ("pr0n", None), ("nackt", None),
]


@pytest.fixture(scope="module")
def moderator():
    return Moderator.default()


@pytest.mark.parametrize("text, category", PROBES)
def test_default_filter_probe_table(moderator, text, category):
    hit = moderator.check_prompt(text)
    assert (hit.category if hit else None) == category


def test_skeletons_readings_and_keys():
    assert skeleton("kiiilll") == "kil" and skeleton("") == ""
    # "1" and "|" read as separators, as i, and as l; "0" is always o
    assert readings("k1ll, p0rn|") == [["k", "l", "porn"], ["kil", "porni"], ["kl", "pornl"]]
    assert {"nude", "nudes", "nudity"} <= term_keys("nude") and "porn" in term_keys("p o r n")
    with pytest.raises(ValueError, match="has no letters"):
        term_keys("  --  ")


def test_earlier_categories_win_and_allowed_phrases_cover_only_their_span():
    f = PromptFilter({"a": ["star"], "b": ["red star"]}, allow=["red star fruit"])
    assert f.check("a red star") == ("a", "star")  # both match; the earlier category is reported
    assert f.check("a red star fruit") is None
    assert f.check("a red star fruit and a star") == ("a", "star")
    with pytest.raises(ValueError, match="expected a list of terms"):
        PromptFilter({"a": "star"})


@pytest.mark.parametrize("text", ["k" + "|" * 1000, "k " * 500, "k.i." * 250, ("p0" * 500), "a" * 1000])
def test_adversarial_prompts_are_answered_and_the_work_is_bounded(text):
    """The old regular expressions backtracked cubically on these (44 s for 'k' + '|' * 400). The work is
    now bounded by tokens × the longest term skeleton: count the joins find_spans makes."""
    class CountingTable(dict):
        lookups = 0

        def __contains__(self, key):
            CountingTable.lookups += 1
            return super().__contains__(key)

    f = Moderator.default().prompt_filter
    assert f.check(text) is None
    longest = max(len(k) for k in f._terms)
    table = CountingTable({k: v for k, v in f._terms.items()})
    for tokens in readings(text):
        CountingTable.lookups = 0
        assert find_spans(tokens, table, longest) == []
        assert CountingTable.lookups <= len(tokens) * 2 * longest  # linear in the prompt, never quadratic
