"""The built-in offline summarizer: the thread's most representative sentences, as they were said.

Sentences of the user and the assistant are scored by how frequent their content words
(words that are not stopwords) are across the whole thread; the best are kept in their
original order. Everything is linear in the thread's length, deterministic and offline.
Stopwords are grouped by language, so another language is a table entry, not new code.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from langchain_core.messages import BaseMessage
from pydantic import BaseModel, ConfigDict, Field, field_validator

from memory_tiers.summarizers.base import (
    MAX_SUMMARY_CHARS,
    MAX_TOPICS,
    BaseSummarizer,
    SummaryContext,
    ThreadSummary,
)
from memory_tiers.text import clip, message_text, replace_lone_surrogates


def _word_list(words: str) -> frozenset[str]:
    return frozenset(words.split())


STOPWORDS: dict[str, frozenset[str]] = {
    "en": _word_list(
        """
        a about above after again against all also am an and any are aren as at be because been before
        being below between both but by can cannot could couldn did didn do does doesn doing don done
        down during each else even ever every few for from further get gets getting got had hadn has
        hasn have haven having he her here hers herself him himself his how however i if in into is
        isn it its itself just know let like ll look make many may me might mine more most much must
        my myself need no nor not now of off oh ok okay on once one only or other our ours ourselves
        out over own please re really same say see shall she should shouldn so some something still
        such sure than thank thanks that the their theirs them themselves then there these they thing
        things think this those though through to too under until up us use used ve very want was
        wasn way we well were weren what when where whether which while who whom whose why will with
        won would wouldn yeah yes yet you your yours yourself yourselves hello hey hi across along
        among around behind beside beyond inside near outside toward towards upon within without
        """
    ),
    "fr": _word_list(
        """
        à adore ai aie aient aies aime aimes ait alors as au aucun aussi autre aux avais avait avec
        avez aviez avoir
        avons ayant bah bien bon bonjour ça car ce ceci cela celle celles celui ces cet cette ceux chez
        ci comme comment d dans de des donc dont du elle elles en encore es est et étaient étais était
        étant été êtes étions être eu eux fait faire fois font ici il ils j je juste l la là le les leur
        leurs lui m ma mais me même mes merci moi moins mon n ne ni non nos notre nous on ont ou où oui
        par parce pas peu peut peux plus pour pourquoi qu quand que quel quelle quelles quels qui quoi
        s sa salut sans se ses si sien soit sommes son sont suis sur t ta te tes toi ton tous tout
        toute toutes très tu un une va vais veut voici voilà vos votre voudrais vous vraiment y
        """
    ),
}

# Sentence ends: Latin and Arabic punctuation before a space, CJK punctuation (no space after
# it), and line breaks.
_SENTENCE_BREAK = re.compile(
    "(?<=[.!?\u2026\u061f\u06d4])\\s+|(?<=[\u3002\uff01\uff1f])\\s*|[\n\r\u2028\u2029]+"
)
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
# Control characters, and the bidi embeddings, overrides and isolates that can make stored
# text display as something else; directional marks (U+200E/F) and joiners are kept.
_UNSAFE = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ufeff]")
_MAX_SENTENCE_CHARS = 300
_MIN_WORD, _MAX_WORD = 3, 40
_SPEAKERS = {"human": "User", "ai": "Assistant"}


class ExtractiveOptions(BaseModel):
    """Options of the `extractive` summarizer (``{use: extractive, options: {...}}``)."""

    model_config = ConfigDict(extra="forbid")

    languages: list[str] = Field(
        default_factory=lambda: ["en", "fr"], min_length=1, description="stopword lists to use"
    )
    max_sentences: int = Field(default=3, ge=1, le=50, description="sentences kept in the summary")
    max_chars: int = Field(
        default=600, ge=20, le=MAX_SUMMARY_CHARS, description="length of the summary, at most"
    )
    max_topics: int = Field(default=5, ge=0, le=MAX_TOPICS, description="most frequent content words kept")
    max_message_chars: int = Field(
        default=20_000,
        ge=100,
        description="characters of each message read: a pasted document is rarely what a thread is about",
    )
    speaker_labels: bool = Field(default=True, description="start each sentence with 'User:' or 'Assistant:'")

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, languages: list[str]) -> list[str]:
        unknown = [language for language in languages if language not in STOPWORDS]
        if unknown:
            raise ValueError(f"no stopwords for {unknown}; known: {sorted(STOPWORDS)}")
        return languages


def _words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFC", text.casefold()))


@dataclass(frozen=True)
class _Sentence:
    position: int
    speaker: str
    text: str
    words: tuple[str, ...]


class ExtractiveSummarizer(BaseSummarizer):
    """Offline, deterministic summaries: the thread's most representative sentences, in order.

    Only the user's and the assistant's text is read (text blocks too); system and tool messages
    never reach the summary. Topics are the thread's most frequent content words.

    Example:
        >>> from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
        >>> thread = [
        ...     SystemMessage("You are a travel agent. Secret code 1234."),
        ...     HumanMessage("I want to plan a trip to Lisbon in May."),
        ...     AIMessage("Lisbon in May is lovely. Do you want a hotel near the river?"),
        ...     HumanMessage("Yes, a hotel in Lisbon near the river, please."),
        ... ]
        >>> summary = ExtractiveSummarizer(ExtractiveOptions(max_sentences=2)).summarize(thread)
        >>> print(summary.text)
        User: I want to plan a trip to Lisbon in May.
        User: Yes, a hotel in Lisbon near the river, please.
        >>> summary.topics[:3], summary.message_count
        (['lisbon', 'hotel', 'river'], 4)
    """

    options_model = ExtractiveOptions
    deterministic = True

    def __init__(self, options: ExtractiveOptions | None = None) -> None:
        self.settings = options or ExtractiveOptions()
        super().__init__(self.settings)
        self.stopwords = [STOPWORDS[language] for language in self.settings.languages]

    def summarize(
        self, messages: Sequence[BaseMessage], context: SummaryContext | None = None
    ) -> ThreadSummary:
        """The summary of ``messages``, computed synchronously (it is pure computation)."""
        sentences = list(self._sentences(messages))
        frequency = Counter(word for sentence in sentences for word in sentence.words)
        best = sorted(
            (s for s in self._distinct(sentences) if s.words),
            key=lambda s: (-self._score(s, frequency), s.position),
        )[: self.settings.max_sentences]
        lines = [
            f"{s.speaker}: {s.text}" if self.settings.speaker_labels else s.text
            for s in sorted(best, key=lambda s: s.position)
        ]
        topics = [word for word, _ in frequency.most_common(self.settings.max_topics)]
        return ThreadSummary(
            text=clip("\n".join(lines), self.settings.max_chars),
            topics=topics,
            message_count=len(messages),
        )

    async def asummarize(self, messages: Sequence[BaseMessage], context: SummaryContext) -> ThreadSummary:
        """`summarize`, for the `ThreadSummarizer` contract."""
        return self.summarize(messages, context)

    def _sentences(self, messages: Sequence[BaseMessage]) -> Iterator[_Sentence]:
        position = 0
        for message in messages:
            speaker = _SPEAKERS.get(message.type)
            if speaker is None:  # system prompts and tool output are not the conversation
                continue
            text = message_text(message)
            cut = len(text) > self.settings.max_message_chars
            text = _UNSAFE.sub(" ", replace_lone_surrogates(text[: self.settings.max_message_chars]))
            sentences = [
                clip(" ".join(raw.split()), _MAX_SENTENCE_CHARS) for raw in _SENTENCE_BREAK.split(text)
            ]
            if cut and len(sentences) > 1:
                sentences.pop()  # the cut left half a sentence
            words = [_words(sentence) for sentence in sentences]
            stopwords = self._stopwords_for(words)
            for sentence, sentence_words in zip(sentences, words, strict=True):
                if sentence:
                    content = tuple(
                        w for w in sentence_words if _MIN_WORD <= len(w) <= _MAX_WORD and w not in stopwords
                    )
                    yield _Sentence(position, speaker, sentence, content)
                    position += 1

    def _stopwords_for(self, words: list[list[str]]) -> frozenset[str]:
        # One language per message, the one whose stopwords it uses most: the lists overlap with
        # other languages' content words ("car" is "because" in French).
        if len(self.stopwords) == 1:
            return self.stopwords[0]
        hits = [sum(word in stopwords for ws in words for word in ws) for stopwords in self.stopwords]
        return self.stopwords[hits.index(max(hits))]

    @staticmethod
    def _distinct(sentences: list[_Sentence]) -> Iterator[_Sentence]:
        # A sentence said twice is summarized once.
        seen: set[str] = set()
        for sentence in sentences:
            key = sentence.text.casefold()
            if key not in seen:
                seen.add(key)
                yield sentence

    @staticmethod
    def _score(sentence: _Sentence, frequency: Counter[str]) -> float:
        # Frequent words count, long sentences do not win by length alone.
        distinct = set(sentence.words)
        return sum(frequency[word] for word in distinct) / len(distinct) ** 0.5
