{#- One row per period from `first` to `last` (dates) every `step` (an interval): a set in
    the select list, as each engine returns one. -#}
{% macro period_series(first, last, step) -%}
    {{ return(adapter.dispatch('period_series')(first, last, step)) }}
{%- endmacro %}

{% macro default__period_series(first, last, step) -%}
    cast(unnest(generate_series({{ first }}, {{ last }}, {{ step }})) as date)
{%- endmacro %}

{% macro postgres__period_series(first, last, step) -%}
    cast(generate_series(cast({{ first }} as timestamp), cast({{ last }} as timestamp), {{ step }}) as date)
{%- endmacro %}
