-- Every published cell image with its split (see defect_split_assignments) and its label: the
-- drop's own, else the latest version of the annotation loop's (label_source says which;
-- label_version which version).
{% set labeled = source('warehouse', 'labeled_defect_images') %}
{% set labeled_exists = relation_exists(labeled) %}

with annotated as (
    {% if labeled_exists %}
    select image_id, label = 'defective' as defective, version
    from {{ labeled }}
    where version = (select max(version) from {{ labeled }})
    {% else %}
    -- No batch merged yet: nothing annotated.
    select
        cast(null as varchar) as image_id,
        cast(null as boolean) as defective,
        cast(null as bigint) as version
    where false
    {% endif %}
)

select
    i.image_id,
    i.file_name,
    i.drop_id,
    i.source,
    i.image_uri,
    i.width,
    i.height,
    i.defect_probability,
    coalesce(i.defective, l.defective) as defective,
    case
        when i.defective is not null then 'source'
        when l.defective is not null then 'annotation'
    end as label_source,
    l.version as label_version,
    i.module_type,
    i.brightness,
    i.contrast,
    i.sharpness,
    a.split
from {{ ref('stg_defect_images') }} as i
inner join {{ ref('defect_split_assignments') }} as a on i.image_id = a.image_id
left join annotated as l on i.image_id = l.image_id
