{#- The normalized text a split is assigned by: lower-case, digits and punctuation stripped,
    whitespace collapsed. Exact and trivial near-duplicates share a key, hence a split.
    Each engine spells "a letter" its own way; the key is the same. -#}
{% macro text_key(column) -%}
    {{ return(adapter.dispatch('text_key')(column)) }}
{%- endmacro %}

{% macro default__text_key(column) -%}
    trim(regexp_replace(regexp_replace(lower({{ column }}), '[^\p{L}\s]+', ' ', 'g'), '\s+', ' ', 'g'))
{%- endmacro %}

{% macro postgres__text_key(column) -%}
    trim(regexp_replace(regexp_replace(lower({{ column }}), '[^[:alpha:][:space:]]+', ' ', 'g'), '[[:space:]]+', ' ', 'g'))
{%- endmacro %}

{#- A stable bucket 0..99 from a text: md5 does not change across engines or versions. -#}
{% macro hash_bucket(column) -%}
    {{ return(adapter.dispatch('hash_bucket')(column)) }}
{%- endmacro %}

{% macro default__hash_bucket(column) -%}
    (('0x' || left(md5({{ column }}), 8))::ubigint % 100)
{%- endmacro %}

{% macro postgres__hash_bucket(column) -%}
    (('x' || left(md5({{ column }}), 8))::bit(32)::bigint % 100)
{%- endmacro %}
