"""TextToSpeechNode: text to speech with espeak-ng (the Debian package's command)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np

from remotemedia_nodes import models
from remotemedia_nodes.audio import Audio
from remotemedia_nodes.declare import Param, Port
from remotemedia_nodes.errors import InvalidInput, InvalidRequest, ParamError, quoted
from remotemedia_nodes.registry import Node, node

#: Longest text synthesised in one call (about five minutes of speech).
MAX_TEXT = 5000
#: The rate espeak-ng's own voices speak at.
OUTPUT_RATE = 22050


@dataclass(frozen=True)
class Espeak:
    """The espeak-ng installation: its command, version and voices."""

    command: str
    version: str
    #: The voices `espeak-ng --voices` lists: languages (`en-us`) and file names (`gmw/en-US`).
    voices: frozenset[str]
    #: The listing's VoiceName column (which `-v` mostly refuses), to the voice's language.
    named: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    #: Whether `-v` takes each listed voice checked so far: a few listed names are refused.
    _accepted: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)
    #: Each listed voice by its case-folded spelling.
    _by_folded: dict[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # espeak-ng finds voices whatever their case (`en-US`, `GMW/EN-US`), as language tags
        # are compared: a voice is looked up by its lower-case spelling.
        object.__setattr__(self, "_by_folded", {v.casefold(): v for v in sorted(self.voices)})

    def resolve(self, voice: str) -> str | None:
        """The listed spelling of `voice`, in any case, if espeak-ng speaks with it (asked once
        per voice, 5-10 ms); None if it is not listed or espeak-ng refuses it."""
        listed = self._by_folded.get(voice.casefold())
        if listed is None:
            return None
        if listed not in self._accepted:
            quiet = subprocess.run([self.command, "-q", "-v", listed, ""], capture_output=True, check=False)
            self._accepted[listed] = quiet.returncode == 0
        return listed if self._accepted[listed] else None

    def synthesise(self, text: str, voice: str, rate_wpm: int, pitch: int) -> Audio:
        """`text` spoken by `voice` as mono int16 audio at espeak-ng's own rate (22050 Hz).

        Raises:
            RuntimeError: espeak-ng failed (its message is kept).
        """
        result = subprocess.run(
            [self.command, "--stdout", "-b", "1", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch)],
            input=text.encode("utf-8"),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"espeak-ng exited with {result.returncode}: {result.stderr.decode(errors='replace').strip()}")
        return _wav(result.stdout)


def _wav(data: bytes) -> Audio:
    """The samples of the WAV espeak-ng writes to a pipe (its size fields are placeholders, so
    the data runs to the end)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not write a WAV stream")
    pos, rate = 12, 0
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"fmt ":
            channels, rate = struct.unpack("<HI", data[pos + 10 : pos + 16])
            bits = struct.unpack("<H", data[pos + 22 : pos + 24])[0]
            if channels != 1 or bits != 16:
                raise RuntimeError(f"espeak-ng wrote {channels} channels of {bits}-bit audio, expected mono 16-bit")
        if chunk == b"data":
            body = data[pos + 8 :]
            return Audio(np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.int16), rate)
        pos += 8 + size
    raise RuntimeError("espeak-ng's WAV stream has no data chunk")


def load_espeak() -> Espeak:
    """Finds espeak-ng and lists its voices (`espeak-ng --voices`)."""
    command = shutil.which("espeak-ng")
    if command is None:
        raise FileNotFoundError("the espeak-ng command is not installed (Debian package espeak-ng)")
    version = subprocess.run([command, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    listing = subprocess.run([command, "--voices"], capture_output=True, text=True, check=True).stdout
    voices: set[str] = set()
    named: dict[str, str] = {}
    for line in listing.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 5:
            # Pty, Language, Age/Gender, VoiceName, File: -v takes a language or a file name
            # (most VoiceNames, such as `English_(America)`, it refuses).
            voices.update((fields[1], fields[4]))
            named.setdefault(fields[3], fields[1])
    return Espeak(command, version, frozenset(voices), named)


#: Stateless and cheap to share: one description of the installation serves every node.
ESPEAK = models.register(
    models.Model(name="espeak-ng", load=load_espeak, description="the espeak-ng command and its voices (Debian package espeak-ng)")
)


def _json_kind(value: Any) -> str:
    """What `value`, parsed from JSON, is, in JSON's words (`a number`, `null`, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: a JSON boolean arrives as a bool, an int subclass
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else type(value).__name__


def _text(value: Any) -> str:
    """The text of a `data` input: a string, or an object with a `text` string (such as
    SpeechRecognitionNode's output)."""
    got = _json_kind(value)
    if isinstance(value, dict):
        got = "an object without a `text` string" if "text" not in value else f"an object whose `text` is {_json_kind(value['text'])}"
        value = value.get("text")
    if not isinstance(value, str):
        raise InvalidRequest(f"its data input must be a string or an object with a `text` string, got {got}", field="data")
    if len(value) > MAX_TEXT:
        raise InvalidRequest(
            f"the text is {len(value)} characters long; at most {MAX_TEXT} are spoken per input", field="data"
        )
    if "\0" in value:
        raise InvalidRequest(
            f"the text holds a NUL character at position {value.index(chr(0))}; espeak-ng stops reading at one",
            field="data",
        )
    # espeak-ng reads `[[...]]` as phoneme codes in any text; a space between the brackets keeps
    # them the punctuation they are written as.
    return re.sub(r"\[(?=\[)", "[ ", re.sub(r"\s+", " ", value).strip())


@node("TextToSpeechNode")
class TextToSpeech(Node):
    """Text to speech with espeak-ng.

    Speaks the text arriving on its `data` port (from `data_inputs`, or an upstream node such
    as SpeechRecognitionNode's `text`; an object with a `"text"` string works too) and returns
    it on `output` as mono int16 audio at 22050 Hz, espeak-ng's own rate (add an
    AudioResampleNode for another). Empty text gives empty audio; text is spoken as written
    (markup such as SSML or espeak-ng's `[[phonemes]]` is read out, not interpreted), at most
    5000 characters per input, without NUL characters.
    Each input is spoken as it arrives, so a stream speaks each utterance on its own.
    """

    models = (ESPEAK,)
    inputs = (Port.data("data", 'text to speak (at most 5000 characters), or {"text": ...}'),)
    outputs = (Port.audio("output", "the speech, mono int16 at 22050 Hz"),)

    def __init__(
        self,
        voice: Annotated[
            str,
            Param(doc="espeak-ng voice, in any case: a language (`en-us`, `en-gb`, `de`) or voice file name (`gmw/en-US`)", max_length=64),
        ] = "en-us",
        rate_wpm: Annotated[int, Param(80, 450, unit="words/min", doc="speaking rate")] = 175,
        pitch: Annotated[int, Param(0, 99, doc="base pitch, espeak-ng's scale (50 is normal)")] = 50,
    ) -> None:
        self.engine = models.host.get(ESPEAK)
        listed = self.engine.resolve(voice)
        if listed is None:
            language = voice.split("-")[0].casefold()
            similar = sorted(v for v in self.engine.voices if v.split("-")[0].casefold() == language and self.engine.resolve(v))[:12]
            hint = f"; voices of that language: {', '.join(similar)}" if similar else "; `espeak-ng --voices` lists them"
            if voice in self.engine.named:
                hint = f" (that is a voice's name; give its language, `{self.engine.named[voice]}`)"
            raise ParamError("voice", f"names no espeak-ng voice: `{quoted(voice)}`{hint}")
        self.voice, self.rate_wpm, self.pitch = listed, rate_wpm, pitch

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if "data" not in inputs:
            raise InvalidInput("missing input port `data` (the text to speak)")
        text = _text(inputs["data"])
        if not text:
            return {"output": Audio(np.zeros(0, dtype=np.int16), OUTPUT_RATE)}
        with models.host.inference(ESPEAK, "TextToSpeechNode"):
            return {"output": self.engine.synthesise(text, self.voice, self.rate_wpm, self.pitch)}
