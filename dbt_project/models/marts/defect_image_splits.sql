-- Every published cell image with its split (see defect_split_assignments) and its label.
select
    i.image_id,
    i.file_name,
    i.drop_id,
    i.source,
    i.image_uri,
    i.width,
    i.height,
    i.defect_probability,
    i.defective,
    case when i.defective is not null then 'source' end as label_source,
    i.module_type,
    i.brightness,
    i.contrast,
    i.sharpness,
    a.split
from {{ ref('stg_defect_images') }} as i
inner join {{ ref('defect_split_assignments') }} as a on i.image_id = a.image_id
