from __future__ import annotations

import pytest

from executor.errors import TemplateVariablesError, UnknownTemplate
from executor.templates import TEMPLATES, get_template, preview, render_parameters

NO_MOVEMENT = {
    # Deliberately not in declared order: the declared order must win.
    "fecha_de_ultimo_movimiento": "2024-05-02",
    "transportadora": "Servientrega",
    "ultimo_movimiento": "En centro de distribución",
    "numero_de_guia": "700123456789",
}


def test_registry_matches_design() -> None:
    assert set(TEMPLATES) == {"no_movement_48h", "at_office_3d"}
    assert TEMPLATES["no_movement_48h"].variables == (
        "numero_de_guia",
        "transportadora",
        "ultimo_movimiento",
        "fecha_de_ultimo_movimiento",
    )
    assert TEMPLATES["at_office_3d"].variables == (
        "numero_de_guia",
        "transportadora",
        "ciudad_de_destino",
    )
    for template in TEMPLATES.values():
        assert template.language == "es"
        for index in range(1, len(template.variables) + 1):
            assert "{{" + str(index) + "}}" in template.body
        assert "{{" + str(len(template.variables) + 1) + "}}" not in template.body


def test_parameters_follow_declared_order_and_are_stripped() -> None:
    variables = dict(NO_MOVEMENT, transportadora="  Servientrega \n")
    assert render_parameters("no_movement_48h", variables) == [
        "700123456789",
        "Servientrega",
        "En centro de distribución",
        "2024-05-02",
    ]


def test_non_string_values_and_inner_whitespace() -> None:
    params = render_parameters(
        "at_office_3d",
        {
            "numero_de_guia": 700123,
            "transportadora": "Inter\tRapidísimo",
            "ciudad_de_destino": "Cali",
        },
    )
    assert params == ["700123", "Inter Rapidísimo", "Cali"]


def test_extra_variables_are_ignored() -> None:
    variables = {
        "numero_de_guia": "G1",
        "transportadora": "TCC",
        "ciudad_de_destino": "Medellín",
        "something_else": "ignored",
    }
    assert render_parameters("at_office_3d", variables) == ["G1", "TCC", "Medellín"]


@pytest.mark.parametrize("missing_value", [None, "", "   "])
def test_missing_variable_is_named_and_no_value_is_echoed(missing_value: object) -> None:
    variables = {
        "numero_de_guia": "SECRET-GUIDE-998877",
        "transportadora": "Coordinadora",
        "ciudad_de_destino": missing_value,
    }
    with pytest.raises(TemplateVariablesError) as info:
        render_parameters("at_office_3d", variables)
    message = str(info.value)
    assert "ciudad_de_destino" in message
    assert "SECRET-GUIDE-998877" not in message
    assert "Coordinadora" not in message
    assert info.value.code == "TEMPLATE_VARIABLES"


def test_every_missing_variable_is_named() -> None:
    with pytest.raises(TemplateVariablesError) as info:
        render_parameters("no_movement_48h", {"transportadora": "TCC"})
    message = str(info.value)
    for name in ("numero_de_guia", "ultimo_movimiento", "fecha_de_ultimo_movimiento"):
        assert name in message
    assert "transportadora" not in message.split(":")[-1]


def test_unknown_trigger() -> None:
    with pytest.raises(UnknownTemplate) as info:
        get_template("no_such_trigger")
    assert "no_such_trigger" in str(info.value)
    assert info.value.code == "UNKNOWN_TEMPLATE"
    with pytest.raises(UnknownTemplate):
        render_parameters("no_such_trigger", {})
    with pytest.raises(UnknownTemplate):
        preview("no_such_trigger", {})


def test_unknown_trigger_message_redacts_a_phone() -> None:
    with pytest.raises(UnknownTemplate) as info:
        get_template("+573001234567")
    assert "3001234567" not in str(info.value)


def test_preview_substitutes_in_order() -> None:
    text = preview("no_movement_48h", NO_MOVEMENT)
    assert "{{" not in text
    guide = text.index("700123456789")
    carrier = text.index("Servientrega")
    movement = text.index("En centro de distribución")
    date = text.index("2024-05-02")
    assert guide < carrier < movement < date


def test_preview_does_not_resubstitute_parameter_text() -> None:
    text = preview(
        "at_office_3d",
        {"numero_de_guia": "{{2}}", "transportadora": "TCC", "ciudad_de_destino": "Pasto"},
    )
    assert "{{2}}" in text
