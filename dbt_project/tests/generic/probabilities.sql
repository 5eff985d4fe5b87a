{#- Every column whose name starts with `prefix` holds a probability: null, or a number in [0, 1] (NaN and
    ±inf are not). The columns are read from the relation, so an attribute added to the table is covered
    without touching the yml; a relation with no such column fails, so the test cannot pass vacuously. -#}
{% test probabilities(model, prefix='prob_') %}
{%- set columns = [] -%}
{%- if execute -%}
  {%- for column in adapter.get_columns_in_relation(model) if column.name.startswith(prefix) -%}
    {%- do columns.append(column.name) -%}
  {%- endfor -%}
{%- endif -%}
{%- if columns -%}
  {%- for column in columns %}
select '{{ column }}' as column_name, cast({{ column }} as double) as value from {{ model }}
where {{ column }} is not null and (isnan(cast({{ column }} as double)) or {{ column }} < 0 or {{ column }} > 1)
{% if not loop.last %}union all{% endif %}
  {%- endfor %}
{%- else %}
select 'no column starts with {{ prefix }}' as column_name, cast(null as double) as value
{%- endif %}
{% endtest %}
