{#- A value outside [min_value, max_value], NaN included: NaN is in no range, and DuckDB only happens to sort
    it above every number, so the rule says so itself. Nulls pass (a column is nullable unless not_null says
    otherwise). -#}
{% test between(model, column_name, min_value, max_value) %}
select {{ column_name }} from {{ model }}
where {{ column_name }} is not null
  and (isnan(cast({{ column_name }} as double))
       or {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }})
{% endtest %}
