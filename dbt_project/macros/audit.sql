{#- The score a system must reach to count as "flags the post": the system's entry in the `audit_thresholds`
    var (a map system -> threshold), else `audit_threshold`. A threshold outside [0, 1] or not a number stops
    the build; system names are quoted, so a var cannot inject SQL. -#}
{% macro checked_threshold(value, what) -%}
    {%- if value is not number or value < 0 or value > 1 -%}
        {{ exceptions.raise_compiler_error(what ~ " must be a number in [0, 1], got " ~ value) }}
    {%- endif -%}
    {{ value | float }}
{%- endmacro %}

{% macro audit_threshold(system_column) -%}
    {%- set thresholds = var('audit_thresholds', {}) or {} -%}
    {%- set default = checked_threshold(var('audit_threshold'), 'audit_threshold') -%}
    {%- if thresholds -%}
    case {{ system_column }}
        {%- for system, threshold in thresholds.items() %}
        when '{{ system | replace("'", "''") }}' then {{ checked_threshold(threshold, 'audit_thresholds[' ~ system ~ ']') }}
        {%- endfor %}
        else {{ default }}
    end
    {%- else -%}
    {{ default }}
    {%- endif -%}
{%- endmacro %}
