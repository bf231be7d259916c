-- Only published rows: a drop whose blocking checks failed stays in validated_defect_images,
-- unpublished (queryable there), and reaches nothing downstream. Empty until the first image
-- drop is validated.
{% set validated = source('warehouse', 'validated_defect_images') %}
{% set validated_exists = relation_exists(validated) %}

{% if validated_exists %}
select
    image_id,
    file_name,
    drop_id,
    source,
    image_uri,
    width,
    height,
    defect_probability,
    defective,
    module_type,
    brightness,
    contrast,
    sharpness
from {{ validated }}
where published
{% else %}
select
    cast(null as varchar) as image_id,
    cast(null as varchar) as file_name,
    cast(null as varchar) as drop_id,
    cast(null as varchar) as source,
    cast(null as varchar) as image_uri,
    cast(null as bigint) as width,
    cast(null as bigint) as height,
    cast(null as double precision) as defect_probability,
    cast(null as boolean) as defective,
    cast(null as varchar) as module_type,
    cast(null as double precision) as brightness,
    cast(null as double precision) as contrast,
    cast(null as double precision) as sharpness
where false
{% endif %}
