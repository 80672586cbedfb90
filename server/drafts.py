"""Speculative decoding in the server: which variant drafts for which (`gptzoo serve --draft`), and a target's draft
opened when its worker loads.

`--draft TARGET=DRAFT` (ids or depth aliases, resolved as --models resolves them; repeatable) names pairs;
`--draft auto` drafts every variant by the shallowest exported variant with its tokenizer and dataset
(gptzoo.zoo.speculative.auto_draft), variants with none serving without; a pair named beside `auto` wins over it.
`resolve` refuses what cannot draft before the server starts; the settings carry the resolved pairs as
"TARGET=DRAFT" strings (and "auto") to every server process, where `DraftPlan` reads them.

The draft belongs to the target's worker: the worker opens the draft's ONNX file when it loads (a session of its own
on the worker's device and threads, a slot cache of its own inside the worker's Batch), so the draft need not be
served itself (`--models` may leave it out). The store is read at that moment: a target that loads (at start,
re-exported, or loaded by an operator) drafts with what the store holds then (with `auto`, the shallowest draft
exported by then). A draft re-exported or removed later does not touch a target that serves (its session holds the
model in memory) until the target loads again. A draft that cannot be opened then (removed, not exported, broken,
re-exported with another vocabulary) is a warning in the log and the target serves without drafting: a draft only
ever makes a target faster, never unavailable."""

from __future__ import annotations

from dataclasses import dataclass

from gptzoo.server.aliases import resolve_names
from gptzoo.zoo.errors import BadValue
from gptzoo.zoo.runtime import OnnxModel, open_variant
from gptzoo.zoo.speculative import MAX_DRAFT_TOKENS, Draft, auto_draft, check_pair, check_variants
from gptzoo.zoo.step_contract import StepRunner
from gptzoo.zoo.store import Broken, Store, Variant

AUTO = "auto"
OPTION = "--draft"


def parse(values: list[str]) -> tuple[bool, list[tuple[str, str]]]:
    """`--draft` values as written: whether `auto` is among them, and the TARGET=DRAFT pairs; BadValue for any other
    shape."""
    auto, pairs = False, []
    for value in values:
        value = value.strip()
        if value == AUTO:
            auto = True
            continue
        target, eq, draft = (s.strip() for s in value.partition("="))
        if not (eq and target and draft) or "=" in draft:
            raise BadValue(f"{OPTION}: {value[:80]!r} is neither TARGET=DRAFT (ids or depth aliases, e.g. 12l=1l) "
                           f"nor {AUTO}")
        pairs.append((target, draft))
    return auto, pairs


def resolve(values: list[str], variants: list[Variant]) -> tuple[list[str], list[str]]:
    """The settings' `drafts` for `--draft` values (names resolved to ids), and warnings to show (a draft that is
    not shallower than its target); BadValue for a name not in the store, a target given two drafts, or a draft
    that cannot draft for its target (another tokenizer or vocabulary, not exported, the target itself)."""
    auto, named = parse(values)
    by_id = {v.id: v for v in variants}
    pairs: dict[str, str] = {}
    warnings = []
    for target_name, draft_name in named:
        target, draft = resolve_names(variants, [target_name, draft_name], OPTION)
        if pairs.get(target, draft) != draft:
            raise BadValue(f"{OPTION}: {target} is given two drafts ({pairs[target]} and {draft})")
        if target in pairs:
            continue
        pairs[target] = draft
        try:
            warning = check_variants(by_id[target], by_id[draft])
        except BadValue as e:
            raise BadValue(f"{OPTION} {target_name}={draft_name}: {e}") from None
        if warning:
            warnings.append(f"{OPTION} {target_name}={draft_name}: {warning}")
    return [AUTO] * auto + [f"{t}={d}" for t, d in pairs.items()], warnings


@dataclass(frozen=True)
class DraftPlan:
    """Who drafts for whom in this server: pairs by id, `auto` for the others, and the most tokens a round drafts."""

    store: Store
    pairs: dict[str, str]
    auto: bool = False
    k: int = 4

    @classmethod
    def from_settings(cls, store: Store, entries: list[str] | None, k: int,
                      variants: list[Variant]) -> DraftPlan | None:
        """None when nothing drafts. Names are resolved again over `variants` (the settings may come from the
        environment, written by hand): BadValue as for `resolve`, without its checks of each pair (the worker
        checks a pair when it opens the draft)."""
        if not entries:
            return None
        if not 1 <= k <= MAX_DRAFT_TOKENS:
            raise BadValue(f"draft tokens must be within 1..{MAX_DRAFT_TOKENS}, got {k}")
        auto, named = parse(entries)
        pairs = {}
        for target, draft in named:
            target, draft = resolve_names(variants, [target, draft], OPTION)
            pairs.setdefault(target, draft)
        return cls(store, pairs, auto, k)

    def drafts_for(self, target: Variant) -> tuple[Variant | None, str | None]:
        """The variant that drafts for `target` as the store holds it now, or None and why not (no reason: the
        target has no draft)."""
        name = self.pairs.get(target.id)
        if name is None:
            return (auto_draft(self.store.variants(), target) if self.auto else None), None
        entry = self.store.entry(name)
        if entry is None:
            return None, f"its draft {name} is no longer in the store"
        if isinstance(entry, Broken):
            return None, f"its draft {name} cannot be used: {entry.reason}"
        return entry, None

    def open(self, target: Variant, model: StepRunner, draft: Variant, device: str,
             threads: int | None) -> tuple[Draft, str | None]:
        """The draft for a Batch of `model` (the target's loaded session), and a warning to log (not shallower);
        raises when the draft cannot draft for it (BadValue, OnnxLoadError, OSError)."""
        warning = check_variants(target, draft)
        runner: OnnxModel = open_variant(draft, device, threads)
        check_pair(model, runner)
        return Draft(runner, self.k), warning
