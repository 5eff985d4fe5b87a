{#- The bsky.app page of a post, from its AT URI (`at://<did>/app.bsky.feed.post/<rkey>`). -#}
{% macro bsky_link(uri) -%}
    case when {{ uri }} is not null then
        'https://bsky.app/profile/' || split_part({{ uri }}, '/', 3) || '/post/' || split_part({{ uri }}, '/', 5)
    end
{%- endmacro %}
