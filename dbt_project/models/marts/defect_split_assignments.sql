-- The split of every cell image, assigned once by its content id and never rewritten (full
-- refresh is off): the same picture dropped again keeps its split. Stratified by label and
-- module type (`defective:mono`, `unlabeled:poly`, …): see the macro
-- stratified_split_assignments.
{{ config(materialized='incremental', incremental_strategy='append', full_refresh=false) }}

with images as (
    select
        image_id,
        min(
            coalesce(
                case when defective then 'defective' when not defective then 'functional' end,
                'unlabeled'
            )
            || ':'
            || coalesce(module_type, 'unknown')
        ) as stratum
    from {{ ref('stg_defect_images') }}
    group by image_id
),

{{ stratified_split_assignments('images', 'image_id') }}
