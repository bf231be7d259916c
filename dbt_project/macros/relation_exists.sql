{# Whether a source table exists yet: a domain's tables appear with its first validated drop
   (or first merged annotation batch), and the models over them are empty until then. #}
{% macro relation_exists(relation) %}
    {{ return(execute and adapter.get_relation(
        database=relation.database, schema=relation.schema, identifier=relation.identifier
    ) is not none) }}
{% endmacro %}
