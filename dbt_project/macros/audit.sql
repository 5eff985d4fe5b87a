{#- The score a system must reach to count as "flags the post": the system's entry in the `audit_thresholds`
    var (a map system -> threshold), else `audit_threshold`; a what-if (`audit_whatif`) overrides its one
    system. A threshold outside [0, 1] or not a number stops the build; system names are quoted, so a var
    cannot inject SQL. -#}
{% macro checked_threshold(value, what) -%}
    {%- if value is not number or value < 0 or value > 1 -%}
        {{ exceptions.raise_compiler_error(what ~ " must be a number in [0, 1], got " ~ value) }}
    {%- endif -%}
    {{ value | float }}
{%- endmacro %}

{% macro audit_threshold(system_column) -%}
    {%- set thresholds = dict(var('audit_thresholds', {}) or {}) -%}
    {%- set whatif = var('audit_whatif', none) -%}
    {%- if whatif -%}
        {%- do thresholds.update({whatif['system']: whatif['threshold']}) -%}
    {%- endif -%}
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

{#- An audit model's table: its own name, or under a what-if (`bsky-warehouse audit --threshold`) the name with
    the what-if's suffix, so the what-if never replaces the shared audit marts. The suffix becomes an
    identifier, so only [a-z0-9_] is accepted. -#}
{% macro audit_alias(model_name) -%}
    {%- set whatif = var('audit_whatif', none) -%}
    {%- if not whatif -%}
        {{ return(model_name) }}
    {%- endif -%}
    {%- if not modules.re.fullmatch("[a-z0-9_]+", whatif['suffix'] | string) -%}
        {{ exceptions.raise_compiler_error("audit_whatif.suffix must match [a-z0-9_]+, got " ~ whatif['suffix']) }}
    {%- endif -%}
    {{ return(model_name ~ "__" ~ whatif['suffix']) }}
{%- endmacro %}
