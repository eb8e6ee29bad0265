"""docs/personal-data.md shows the default masking policy as it is."""

from __future__ import annotations

from pathlib import Path

from fxcrm_core.privacy import DEFAULT_MASKING, HIDDEN, MaskingPolicy, PiiKind, Reveal

PAGE = Path(__file__).resolve().parents[1] / "docs" / "personal-data.md"


def _table_in_page() -> str:
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("<!-- masking-table:start -->\n") + len("<!-- masking-table:start -->\n")
    return text[start : text.index("<!-- masking-table:end -->")].strip()


def test_the_pages_table_is_the_default_policy() -> None:
    assert _table_in_page() == DEFAULT_MASKING.table()


def test_the_table_says_what_the_policy_does() -> None:
    """Read back from the page's text, each cell is what the policy shows for that role."""
    lines = _table_in_page().splitlines()
    kinds = [PiiKind(k.strip()) for k in lines[0].strip("|").split("|")[1:]]
    assert set(kinds) == set(PiiKind)
    word = {"full": Reveal.FULL, "partial": Reveal.PARTIAL, "-": Reveal.HIDDEN}
    rows = {r.strip("|").split("|")[0].strip(): r.strip("|").split("|")[1:] for r in lines[2:]}
    assert set(rows) == {*DEFAULT_MASKING.rules, "any other"}
    for role, cells in rows.items():
        roles = () if role == "any other" else (role,)
        for kind, cell in zip(kinds, cells, strict=True):
            assert DEFAULT_MASKING.reveal_for(roles, kind) is word[cell.strip()], (role, kind)
            if word[cell.strip()] is Reveal.HIDDEN:
                assert DEFAULT_MASKING.show(roles, kind, "ana.lima@example.com") == HIDDEN


def test_a_host_role_added_to_the_masking_policy_keeps_the_others() -> None:
    policy = DEFAULT_MASKING.with_role("retention", {PiiKind.NAME: Reveal.FULL})
    assert policy.reveal_for({"retention"}, PiiKind.NAME) is Reveal.FULL
    assert policy.reveal_for({"retention"}, PiiKind.EMAIL) is Reveal.HIDDEN
    assert {r: dict(k) for r, k in DEFAULT_MASKING.rules.items()}.items() <= {
        r: dict(k) for r, k in policy.rules.items()
    }.items()
    assert "| retention |" in policy.table()
    assert isinstance(policy, MaskingPolicy)
