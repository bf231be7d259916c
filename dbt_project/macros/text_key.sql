{#- The normalized text a split is assigned by: lower-case, digits and punctuation stripped,
    whitespace collapsed. Exact and trivial near-duplicates share a key, hence a split. -#}
{% macro text_key(column) -%}
    trim(regexp_replace(regexp_replace(lower({{ column }}), '[^\p{L}\s]+', ' ', 'g'), '\s+', ' ', 'g'))
{%- endmacro %}

{#- A stable bucket 0..99 from a text: md5 does not change across DuckDB versions. -#}
{% macro hash_bucket(column) -%}
    (('0x' || left(md5({{ column }}), 8))::ubigint % 100)
{%- endmacro %}
