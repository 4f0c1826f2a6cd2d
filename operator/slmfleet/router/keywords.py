"""Which rules' keywords occur in a text as whole words, in one pass over the text.

A rule's keywords used to compile into one Python ``re`` alternation with look-around
word boundaries. Linear in the text for each keyword, but a backtracking engine tries
every alternative at every position: 256 keywords of 126 characters differing only in
case took 0.11 s per rule on ``"x-" * 1500``, and a policy holds ~22 such rules, on
the router's event loop. Here every keyword of a policy goes into one trie over *runs*
(maximal stretches of word or of non-word characters), and the text is split into runs
once: the work is the text's runs times the longest keyword's runs (at most 128),
whatever the number of keywords or rules.

Semantics are those of ``(?<!\\w)keyword(?!\\w)`` with ``re.IGNORECASE``: the keyword
occurs in the text (compared with ``str.lower``; the regex also folded a few rare
pairs such as the long s and s), not preceded or followed by a word character
(Unicode letters, digits and ``_``, as Python's ``\\w``). So ``c++`` and ``.net`` match
as whole words, ``refund`` does not match ``refunded``, and ``two words`` needs exactly
that one space. In runs: a keyword's inner runs equal whole text runs; a word run at
either end equals a whole text run; a non-word run at the start is a suffix of a text
run, and one at the end a prefix, leaving at least one non-word character of that run
outside the keyword (the text is padded with a space at each end, so the start and end
of the text count as non-word).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_RUNS = re.compile(r"\w+|\W+")  # each character class is one step: linear


def _lower(text: str) -> str:
    low = text.lower()
    if len(low) == len(text):
        return low
    # A few characters lower-case to two ('İ'): keep one character per character.
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _is_word(run: str) -> bool:
    return run[0] == "_" or run[0].isalnum()


class _Node:
    """A run path in a compressed trie: the run it is filed under (in its parent's
    ``children``), then ``label``. Only branches and keyword ends are nodes, so a
    policy full of long distinct keywords costs a node per keyword, not per run."""

    __slots__ = ("children", "ends", "label", "tail_lengths", "tails")

    def __init__(self, label: tuple[str, ...] = ()) -> None:
        self.label = label
        self.children: dict[str, _Node] = {}
        self.ends: set[int] = set()
        """Rules whose keyword ends here, on a whole (word) run."""
        self.tails: dict[str, set[int]] = {}
        """Non-word last runs: a keyword ends here if the next run starts with one."""
        self.tail_lengths: set[int] = set()

    def insert(self, runs: tuple[str, ...], rule: int, tail: str | None) -> None:
        node = self
        while True:
            label = node.label
            common = len(label)
            if runs[:common] != label:  # compared in C; the loop only finds where
                common = next(
                    (j for j, (a, b) in enumerate(zip(label, runs, strict=False)) if a != b),
                    min(len(label), len(runs)),
                )
            if common < len(node.label):  # split: the rest of the label moves down
                rest = _Node(node.label[common + 1 :])
                rest.children, rest.ends = node.children, node.ends
                rest.tails, rest.tail_lengths = node.tails, node.tail_lengths
                node.children, node.ends = {node.label[common]: rest}, set()
                node.tails, node.tail_lengths = {}, set()
                node.label = node.label[:common]
            runs = runs[common:]
            if not runs:
                if tail is None:
                    node.ends.add(rule)
                else:
                    node.tails.setdefault(tail, set()).add(rule)
                    node.tail_lengths.add(len(tail))
                return
            child = node.children.get(runs[0])
            if child is None:
                child = node.children[runs[0]] = _Node(runs[1:])
            node, runs = child, runs[1:]


class KeywordIndex:
    """``hits(text)``: the ids of the rules with a keyword in ``text``."""

    def __init__(self, keywords: Iterable[tuple[int, str]]) -> None:
        self._words = _Node()  # keywords starting with a word run, by that run
        self._heads: dict[str, _Node] = {}  # ...starting with a non-word run, by it
        self._head_lengths: set[int] = set()
        self._punct: dict[str, set[int]] = {}  # keywords of one non-word run
        for rule, keyword in keywords:
            self._add(rule, _RUNS.findall(_lower(keyword)))

    def _add(self, rule: int, runs: list[str]) -> None:
        """File ``runs`` (a keyword's, lower-cased) under ``rule``."""
        if not runs:
            return
        if len(runs) == 1 and not _is_word(runs[0]):
            self._punct.setdefault(runs[0], set()).add(rule)
            return
        tail = runs.pop() if len(runs) > 1 and not _is_word(runs[-1]) else None
        if _is_word(runs[0]):
            self._words.insert(tuple(runs), rule, tail)
        else:
            head = self._heads.get(runs[0])
            if head is None:
                head = self._heads[runs[0]] = _Node()
            head.insert(tuple(runs[1:]), rule, tail)
            self._head_lengths.add(len(runs[0]))

    def hits(self, text: str) -> set[int]:
        runs = _RUNS.findall(f" {_lower(text)} ")
        found: set[int] = set()
        if self._punct:
            # Keep a character of the run on each side; a word character between runs
            # stops a keyword (all non-word) from spanning two of them.
            inner = "a".join(r[1:-1] for r in runs if not _is_word(r))
            for keyword, rules in self._punct.items():
                if keyword in inner:
                    found |= rules
        for i, run in enumerate(runs):
            if _is_word(run):
                start = self._words.children.get(run)
                if start is not None:
                    self._walk(start, runs, i + 1, found)
                continue
            for n in self._head_lengths:
                if n < len(run):
                    start = self._heads.get(run[-n:])
                    if start is not None:
                        self._walk(start, runs, i + 1, found)
        return found

    @staticmethod
    def _walk(node: _Node | None, runs: list[str], i: int, found: set[int]) -> None:
        """Follow ``runs`` from ``i`` down from ``node`` (filed under ``runs[i - 1]``)."""
        while node is not None:
            for expected in node.label:
                if i >= len(runs) or runs[i] != expected:
                    return
                i += 1
            found |= node.ends
            if i >= len(runs):
                return
            run = runs[i]
            for n in node.tail_lengths:
                if n < len(run) and (rules := node.tails.get(run[:n])) is not None:
                    found |= rules
            node = node.children.get(run)
            i += 1
