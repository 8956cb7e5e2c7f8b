"""ReplyNode: the language step of the speech-to-speech example, a plug-in loaded with
``--python-nodes-path examples/speech_to_speech/nodes``. It answers each transcript with a
sentence made from a template; a real application puts its language model here."""

from __future__ import annotations

from typing import Annotated, Any

from remotemedia_nodes import InvalidInput, Node, Param, ParamError, Port, node


@node("ReplyNode")
class Reply(Node):
    """Answers text with a sentence: `template` with `{text}` replaced by the text.

    Empty text gets no answer, so silence is not spoken to.
    """

    inputs = (Port.data("data", "text, such as SpeechRecognitionNode's `text`"),)
    outputs = (Port.data("data", "the answer, text"),)

    def __init__(
        self,
        template: Annotated[str, Param(doc="the answer; `{text}` stands for the text heard", max_length=500)] = "You said: {text}",
    ) -> None:
        if "{text}" not in template:
            raise ParamError("template", "must contain `{text}`, where the heard text goes")
        self.template = template

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        text = inputs.get("data")
        if not isinstance(text, str):
            raise InvalidInput(f"ReplyNode: the data input must be text, got {type(text).__name__}")
        return {"data": self.template.replace("{text}", text)} if text.strip() else {}
