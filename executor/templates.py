"""The WhatsApp templates the executor may send (DESIGN §6).

A template is addressed by the action's ``trigger``. Its variables are sent as positional body
parameters ``{{1}}..{{n}}`` in the template's declared order, so the order here is part of the
contract with the provider (the approved template text uses the same numbering).

Errors never echo a variable's value (it may be personal data): only variable names and the
trigger name appear in messages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from executor.errors import TemplateVariablesError, UnknownTemplate
from executor.logs import redact_text

LANGUAGE = "es"

_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
_WHITESPACE = re.compile(r"\s+")
# WhatsApp rejects a body parameter with newlines, tabs or long runs of spaces; longer values
# than this are refused by the provider too.
MAX_PARAMETER_LENGTH = 1024


@dataclass(frozen=True)
class Template:
    name: str
    variables: tuple[str, ...]
    body: str
    language: str = LANGUAGE

    def __post_init__(self) -> None:
        numbers = sorted({int(n) for n in _PLACEHOLDER.findall(self.body)})
        if numbers != list(range(1, len(self.variables) + 1)):
            raise ValueError(f"template {self.name}: placeholders do not match its variables")


NO_MOVEMENT_48H = Template(
    name="no_movement_48h",
    variables=(
        "numero_de_guia",
        "transportadora",
        "ultimo_movimiento",
        "fecha_de_ultimo_movimiento",
    ),
    body=(
        "Hola, te escribimos por tu envío con guía {{1}} de {{2}}. "
        'Su último movimiento registrado fue "{{3}}" el {{4}} y desde hace más de 48 horas '
        "no vemos novedades. Ya lo estamos revisando con la transportadora y te avisaremos "
        "apenas avance. ¡Gracias por tu paciencia!"
    ),
)

AT_OFFICE_3D = Template(
    name="at_office_3d",
    variables=("numero_de_guia", "transportadora", "ciudad_de_destino"),
    body=(
        "Hola, tu envío con guía {{1}} de {{2}} lleva 3 días esperándote en la oficina de la "
        "transportadora en {{3}}. Recuerda reclamarlo pronto presentando tu documento de "
        "identidad, para que no sea devuelto al remitente. ¡Gracias!"
    ),
)

TEMPLATES: Mapping[str, Template] = MappingProxyType(
    {t.name: t for t in (NO_MOVEMENT_48H, AT_OFFICE_3D)}
)


def _safe_trigger(trigger: object) -> str:
    text = redact_text(str(trigger))
    return text if len(text) <= 80 else text[:80] + "…"


def get_template(trigger: str) -> Template:
    """The template for ``trigger``; :class:`UnknownTemplate` if there is none."""
    template = TEMPLATES.get(trigger) if isinstance(trigger, str) else None
    if template is None:
        raise UnknownTemplate(
            f"unknown template {_safe_trigger(trigger)!r}; known: {', '.join(sorted(TEMPLATES))}"
        )
    return template


def _clean(value: object) -> str:
    if value is None:
        return ""
    # Newlines, tabs and runs of spaces are not allowed in a body parameter: fold them.
    return _WHITESPACE.sub(" ", str(value)).strip()


def render_parameters(trigger: str, variables: Mapping[str, object]) -> list[str]:
    """Body parameters of ``trigger`` in declared order, as stripped strings.

    A missing, ``None`` or blank variable raises :class:`TemplateVariablesError` naming every
    such variable (never a value). Variables the template does not use are ignored.
    """
    template = get_template(trigger)
    if not isinstance(variables, Mapping):
        raise TemplateVariablesError(
            f"template {template.name}: variables must be an object with "
            f"{', '.join(template.variables)}"
        )
    values = [_clean(variables.get(name)) for name in template.variables]
    missing = [name for name, value in zip(template.variables, values, strict=True) if not value]
    if missing:
        raise TemplateVariablesError(
            f"template {template.name}: missing or empty variable(s): {', '.join(missing)}"
        )
    too_long = [
        name
        for name, value in zip(template.variables, values, strict=True)
        if len(value) > MAX_PARAMETER_LENGTH
    ]
    if too_long:
        raise TemplateVariablesError(
            f"template {template.name}: variable(s) longer than {MAX_PARAMETER_LENGTH} "
            f"characters: {', '.join(too_long)}"
        )
    return values


def substitute(template: Template, parameters: list[str] | tuple[str, ...]) -> str:
    """``template.body`` with ``{{i}}`` replaced by ``parameters[i-1]`` (one pass)."""

    def _sub(match: re.Match[str]) -> str:
        index = int(match.group(1)) - 1
        return parameters[index] if 0 <= index < len(parameters) else match.group(0)

    return _PLACEHOLDER.sub(_sub, template.body)


def preview(trigger: str, variables: Mapping[str, object]) -> str:
    """The message text a shopper would read (sandbox, dashboard)."""
    return substitute(get_template(trigger), render_parameters(trigger, variables))
