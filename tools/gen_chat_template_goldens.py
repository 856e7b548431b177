#!/usr/bin/env python3
"""Writes tests/data/chat_templates/goldens.json: what Python jinja2 renders for the published
chat templates in tests/data/chat_templates/*.jinja and for a set of language-feature
snippets, in the environment transformers' apply_chat_template uses (jinja2's
ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, loop controls, the
{% generation %} tag, json.dumps as tojson, raise_exception and strftime_now).

    python3 tools/gen_chat_template_goldens.py

fp6serve's ChatTemplate must reproduce every text byte for byte, and fail where jinja2 fails.
Variables are passed as apply_chat_template passes them: messages, add_generation_prompt,
tools and documents (None unless given), then the special tokens and any extra variables.
"""

import json
import pathlib
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "tests" / "data" / "chat_templates"


class GenerationTag(Extension):
    """transformers' AssistantTracker without the tracking: {% generation %} renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


class TemplateError(Exception):
    pass


def make_env():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def render(source, messages, add_generation_prompt, extra):
    """{"text": ...} or {"error": ..., "raised": bool} (raised: by raise_exception)."""
    try:
        template = ENV.from_string(source)
        variables = {"messages": messages, "tools": None, "documents": None,
                     "add_generation_prompt": add_generation_prompt}
        variables.update(extra)
        return {"text": template.render(**variables)}
    except TemplateError as e:
        return {"error": str(e), "raised": True}
    except Exception as e:  # noqa: BLE001 - any jinja2 failure is a golden "it fails"
        return {"error": f"{type(e).__name__}: {e}", "raised": False}


SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
USER1 = {"role": "user", "content": "Hello, who are you?"}
ASSISTANT1 = {"role": "assistant", "content": "I am an assistant."}
USER2 = {"role": "user", "content": "What is 2+2?"}

CONVERSATIONS = {
    "user": [USER1],
    "system_user": [SYSTEM, USER1],
    "multi_turn": [USER1, ASSISTANT1, USER2],
    "system_multi_turn": [SYSTEM, USER1, ASSISTANT1, USER2],
    "ends_with_assistant": [SYSTEM, USER1, ASSISTANT1],
    "unicode": [
        {"role": "system", "content": "Réponds en français, s'il te plaît. 日本語もOK"},
        {"role": "user", "content": "Ünïcödé: 😀 👩‍👩‍👧 — “quotes” ‘single’ \\ back\\slash «x» 中文 العربية"},
        {"role": "assistant", "content": "D'accord ! ✓ naïve café\ttab"},
        {"role": "user", "content": "Zero-width:\u200b, nbsp:\u00a0, line sep:\u2028 end"},
    ],
    "whitespace": [
        {"role": "system", "content": "  padded system  \n"},
        {"role": "user", "content": "\n\n  leading and trailing whitespace \t \n"},
        {"role": "assistant", "content": "   spaced answer   "},
        {"role": "user", "content": "line one\nline two\r\nline three\n"},
    ],
    "empty_content": [{"role": "user", "content": ""}],
    "not_alternating": [USER1, USER2],
    "assistant_first": [ASSISTANT1, USER1],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a time zone (\"IANA\" names, é)",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": []},
    },
}
TOOL_CALL = {
    "id": "call12345",
    "type": "function",
    "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}},
}
TOOL_CONVERSATION = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather",
     "content": "{\"temperature\": 22, \"unit\": \"celsius\"}"},
]
TWO_TOOL_RESULTS = TOOL_CONVERSATION[:2] + [
    {"role": "assistant", "content": "Checking.", "tool_calls": [TOOL_CALL, {
        "id": "call67890", "type": "function", "function": {"name": "get_time", "arguments": {"tz": "Europe/Paris"}}}]},
    {"role": "tool", "tool_call_id": "call12345", "content": "22 C"},
    {"role": "tool", "tool_call_id": "call67890", "content": "14:05"},
    {"role": "assistant", "content": "It is 22 C at 14:05."},
]

LLAMA2_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
LLAMA3_TOKENS = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
QWEN_TOKENS = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}

PLAIN = ["user", "system_user", "multi_turn", "system_multi_turn", "ends_with_assistant", "unicode", "whitespace",
         "empty_content"]

# template file stem -> (special tokens, conversations, extra cases with tools)
REAL_TEMPLATES = {
    "llama-2-7b-chat": (LLAMA2_TOKENS, PLAIN + ["not_alternating", "assistant_first"], []),
    "meta-llama-3-8b-instruct": (LLAMA3_TOKENS, PLAIN, []),
    "llama-3.1-8b-instruct": (LLAMA3_TOKENS, PLAIN, [
        ("tools_in_user_message", TOOL_CONVERSATION[:2], {"tools": [WEATHER_TOOL, TIME_TOOL]}),
        ("tools_in_system", TOOL_CONVERSATION[:2], {"tools": [WEATHER_TOOL], "tools_in_user_message": False}),
        ("tool_call_and_result", TOOL_CONVERSATION, {"tools": [WEATHER_TOOL]}),
        ("builtin_tools", TOOL_CONVERSATION[:2], {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}),
        ("date_string", [SYSTEM, USER1], {"date_string": "01 Jan 2025"}),
        ("two_tool_calls_rejected", TWO_TOOL_RESULTS, {"tools": [WEATHER_TOOL, TIME_TOOL]}),
    ]),
    "mistral-7b-instruct-v0.1": (LLAMA2_TOKENS, PLAIN + ["not_alternating", "assistant_first"], []),
    "mistral-7b-instruct-v0.2": (LLAMA2_TOKENS, PLAIN + ["not_alternating", "assistant_first"], []),
    "mistral-7b-instruct-v0.3": (LLAMA2_TOKENS, PLAIN + ["not_alternating", "assistant_first"], [
        ("tools", TOOL_CONVERSATION[1:2], {"tools": [WEATHER_TOOL, TIME_TOOL]}),
        ("tool_call_and_result", TOOL_CONVERSATION[1:], {"tools": [WEATHER_TOOL]}),
    ]),
    "qwen2.5-7b-instruct": (QWEN_TOKENS, PLAIN, [
        ("tools", TOOL_CONVERSATION[:2], {"tools": [WEATHER_TOOL, TIME_TOOL]}),
        ("tools_no_system", TOOL_CONVERSATION[1:2], {"tools": [WEATHER_TOOL]}),
        ("tool_call_and_result", TOOL_CONVERSATION, {"tools": [WEATHER_TOOL]}),
        ("two_tool_results", TWO_TOOL_RESULTS, {"tools": [WEATHER_TOOL, TIME_TOOL]}),
    ]),
}

# Language features, each rendered with the variables given (plus the defaults above).
FEATURES = [
    ("text", "plain text\n", {}),
    ("trailing_newline_dropped_once", "a\n\n", {}),
    ("crlf_normalized", "a\r\nb\rc", {}),
    ("output", "a{{ x }}b", {"x": "X"}),
    ("undefined_prints_empty", "[{{ missing }}]", {}),
    ("none_bool_print", "{{ none }} {{ None }} {{ true }} {{ False }}", {}),
    ("numbers", "{{ 1 + 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 * 3 - 1 }} {{ -4 }} {{ 1.5 + 1 }}"
     " {{ 7 / 2 }} {{ 10 / 5 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 0x1F }} {{ 1_000 }}", {}),
    ("floats", "{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1.5e-7 }} {{ 3.0 }} {{ 1 / 3 }} {{ 123456789.125 }} {{ 1e-4 }} {{ 2.5e15 }}", {}),
    ("string_escapes", "{{ 'a\\nb\\t\"c\"' }}|{{ \"it's\" }}|{{ '\\x41\\u00e9\\U0001F600' }}|{{ 'a\\qb' }}|{{ '\\101' }}", {}),
    ("adjacent_strings", "{{ 'a' 'b' \"c\" }}", {}),
    ("comment", "a{# gone #}b{#- strip -#}   c", {}),
    ("trim_blocks", "{% if true %}\nx\n{% endif %}\ny", {}),
    ("lstrip_blocks", "a\n    {% if true %}\n    b\n    {% endif %}\nc", {}),
    ("lstrip_not_for_output", "a\n    {{ 'b' }}\n  c", {}),
    ("lstrip_comment", "a\n    {# c #}\nb", {}),
    ("lstrip_after_text", "x  {% if true %}y{% endif %}", {}),
    ("minus_trims", "a   {{- 'b' -}}   c  {%- if true -%}  d  {%- endif %}  e", {}),
    ("plus_keeps", "a\n    {%+ if true %}b{% endif +%}\nc", {}),
    ("minus_trims_newlines", "a\n\n  {%- if true %}\n\nb{% endif -%}\n\n  c", {}),
    ("output_keeps_newline", "{{ 'a' }}\n{{ 'b' }}\n", {}),
    ("line_starting_after_trimmed_block", "{% if true %}\n  {% if true %}x{% endif %}\n{% endif %}", {}),
    ("minus_before_unicode_space", "a\u00a0\u3000{{- 'b' }}", {}),
    ("raw", "{% raw %}{{ not evaluated }}{% endraw %}", {}),
    ("if_elif_else", "{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %},"
     "{% endfor %}", {}),
    ("for_loop_vars", "{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}"
     "{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }};{% endfor %}", {"items": ["a", "b", "c"]}),
    ("for_prev_next", "{% for x in 'abc' %}{{ loop.previtem }}{{ x }}{{ loop.nextitem }}|{% endfor %}", {}),
    ("for_cycle", "{% for x in [1, 2, 3] %}{{ loop.cycle('odd', 'even') }}{% endfor %}", {}),
    ("for_else", "{% for x in [] %}x{% else %}empty{% endfor %}", {}),
    ("for_filter", "{% for x in [1, 2, 3, 4] if x % 2 == 0 %}{{ loop.index }}:{{ x }}/{{ loop.length }}"
     "{% if not loop.last %},{% endif %}{% endfor %}", {}),
    ("for_dict", "{% for k in d %}{{ k }}{% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
     "|{% for k, v in d|items %}{{ k }}{{ v }}{% endfor %}", {"d": {"z": 1, "a": "b"}}),
    ("for_undefined", "{% for x in nothing %}x{% else %}none{% endfor %}", {}),
    ("for_string", "{% for c in 'héllo' %}[{{ c }}]{% endfor %}", {}),
    ("break_continue", "{% for n in [1, 2, 3, 4] %}{% if n == 2 %}{% continue %}{% endif %}{% if n == 4 %}"
     "{% break %}{% endif %}{{ n }}{% endfor %}", {}),
    ("scope_for", "{% set a = 1 %}{% for x in [1, 2] %}[{{ a }}]{% set a = x * 10 %}{{ a }}{% endfor %}{{ a }}"
     "{% if true %}{% set b = 3 %}{% endif %}{{ b }}", {}),
    ("scope_nested_for", "{% for i in [1, 2] %}{% for j in [3] %}{% set x = j %}{% endfor %}{{ x }}{% endfor %}", {}),
    ("namespace", "{% set ns = namespace(total=0, seen=false) %}{% for x in [1, 2, 3] %}"
     "{% set ns.total = ns.total + x %}{% if x == 2 %}{% set ns.seen = true %}{% endif %}{% endfor %}"
     "{{ ns.total }} {{ ns.seen }} {{ ns.missing is defined }} {{ ns['total'] }}", {}),
    ("namespace_empty", "{% set ns = namespace() %}{% set ns.index = 0 %}{% set ns.index = ns.index + 1 %}"
     "{{ ns.index }}", {}),
    ("set_tuple", "{% set a, b = 1, 'x' %}{{ a }}{{ b }}{% set t = (1, 2) %}{{ t }}{{ (1,) }}{{ () }}", {}),
    ("set_block", "{% set body %}  x {{ 1 + 1 }} {% endset %}[{{ body }}]{% set up | upper %}abc{% endset %}{{ up }}", {}),
    ("with", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}[{{ a }}]", {}),
    ("filter_block", "{% filter upper %}hello {{ 'x' }}{% endfilter %}", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
     "{{ greet('Bob') }} {{ greet('Al', punct='?') }} {{ greet(name='Cy') }}", {}),
    ("generation_tag", "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
     {"messages": [USER1, ASSISTANT1]}),
    ("comparisons", "{{ 1 < 2 }}{{ 2 <= 1 }}{{ 'a' == 'a' }}{{ 'a' != 'a' }}{{ 3 > 2 }}{{ 1 >= 1 }}{{ 1 == 1.0 }}"
     "{{ true == 1 }}{{ 'a' < 'b' }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ [1, 2] < [1, 3] }}{{ none == none }}", {}),
    ("logic", "{{ true and false }}{{ true or false }}{{ not true }}{{ not (1 == 2) }}{{ 0 or 'x' }}{{ 'a' and 'b' }}"
     "{{ [] or none }}{{ not missing }}", {}),
    ("membership", "{{ 'b' in 'abc' }}{{ 2 in [1, 2] }}{{ 'k' in d }}{{ 'q' not in d }}{{ 'x' in missing }}",
     {"d": {"k": 1}}),
    ("tests", "{{ x is defined }}{{ y is defined }}{{ y is not defined }}{{ n is none }}{{ s is string }}"
     "{{ d is mapping }}{{ l is iterable }}{{ s is iterable }}{{ n is iterable }}{{ l is sequence }}"
     "{{ x is number }}{{ f is number }}{{ s is number }}{{ t is true }}{{ t is false }}{{ y is undefined }}"
     "{{ x is integer }}{{ f is float }}{{ t is boolean }}{{ 4 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}"
     "{{ s is eq 'str' }}{{ s is equalto('str') }}{{ 2 is in [1, 2] }}{{ missing is iterable }}"
     "{{ 'ab' is lower }}{{ 'AB' is upper }}{{ x is sameas 1 }}{{ range is callable }}",
     {"x": 1, "n": None, "s": "str", "d": {}, "l": [1], "f": 1.5, "t": True}),
    ("test_binds_tighter_than_not", "{{ not x is defined }}{{ not x is none and true }}", {"x": None}),
    ("conditional_expression", "{{ 'yes' if flag else 'no' }}[{{ 'a' if false }}]{{ 1 if 0 else 2 if 0 else 3 }}",
     {"flag": True}),
    ("concat", "{{ 'n=' ~ 3 ~ none ~ missing ~ [1] }}", {}),
    ("string_plus", "{{ 'a' + 'b' }}{{ [1] + [2, 3] }}{{ 'ab' * 3 }}{{ [0] * 2 }}{{ 2 * 'x' }}", {}),
    ("filter_precedence", "{{ 'a' + x | trim + 'b' }}{{ -3 | abs }}{{ 1 + 2 | string }}", {"x": "  y  "}),
    ("attribute_and_item", "{{ m.role }}{{ m['content'] }}{{ l[0] }}{{ l[-1] }}{{ l.0 }}{{ m.nope }}{{ l[9] }}"
     "{{ m.items is defined }}{{ m['items'] }}", {"m": {"role": "user", "content": "c", "items": "it"},
                                                 "l": ["a", "b"]}),
    ("slices", "{{ l[1:] }}{{ l[:-1] }}{{ l[::-1] }}{{ l[::2] }}{{ l[5:] }}{{ 'héllo'[1:3] }}{{ 'abc'[-1] }}"
     "{{ 'abcdef'[-2:] }}{{ l[-100:2] }}", {"l": [1, 2, 3, 4]}),
    ("print_containers", "{{ [1, 'a', none, true, 1.0, {'k': \"it's\"}] }}{{ {'a': [1, 2]} }}{{ ('x', \"y'\") }}"
     "{{ ['a\\nb', 'tab\\t', 'q\"', '\\x01'] }}", {}),
    ("dict_literal", "{% set d = {'a': 1, 'b': [1, 2], 'a': 3} %}{{ d }}{{ d.a }}{{ d|length }}", {}),
    ("string_methods", "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|{{ 'a  '.rstrip() }}|"
     "{{ '  a b  '.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a,b,c'.split(',', 1) }}{{ 'a b c'.rsplit(' ', 1) }}"
     "{{ ' a  b c '.split(none, 1) }}{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x', 'c')) }}"
     "{{ 'aBc'.upper() }}{{ 'aBc'.lower() }}{{ 'hello wORLD-x'.title() }}{{ 'hello World'.capitalize() }}"
     "{{ 'a-b-c'.replace('-', '+') }}{{ 'a-b-c'.replace('-', '', 1) }}{{ 'abc'.replace('', '.') }}"
     "{{ 'héllo'.find('l') }}{{ 'abc'.find('z') }}{{ 'banana'.count('a') }}{{ ', '.join(['a', 'b']) }}"
     "{{ '{} and {x}'.format(1, x=2) }}{{ '12'.isdigit() }}{{ 'a1'.isalpha() }}{{ ' \\t'.isspace() }}", {}),
    ("strip_unicode_whitespace", "[{{ ' \\u00a0\\u3000x\\u2028 '.strip() }}][{{ ' x '|trim }}][{{ 'xax'|trim('x') }}]", {}),
    ("dict_methods", "{{ d.get('a') }}{{ d.get('z') }}{{ d.get('z', 5) }}{{ d.keys()|list }}{{ d.values()|list }}"
     "{{ d.items()|list }}", {"d": {"a": 1, "b": 2}}),
    ("filters_basic", "{{ 'hello world'|upper }}{{ 'HeLLo'|lower }}{{ 'hello big-world (x)'|title }}"
     "{{ 'hELLO'|capitalize }}{{ [1, 2, 3]|length }}{{ 'héllo'|length }}{{ d|length }}{{ missing|length }}"
     "{{ 'abc'|count }}{{ [3, 1]|first }}{{ [3, 1]|last }}{{ 'abc'|first }}{{ 'abc'|list }}{{ 'abc'|reverse }}"
     "{{ [1, 2]|reverse|list }}{{ 'a-b'|replace('-', '+') }}{{ 42|string }}{{ none|string }}{{ 1|safe }}",
     {"d": {"a": 1}}),
    ("filter_default", "{{ missing|default('dflt') }}{{ missing|d('d') }}{{ ''|default('e') }}"
     "{{ ''|default('e', true) }}{{ none|default('n') }}{{ 0|default(5, boolean=true) }}{{ missing|default }}", {}),
    ("filter_join", "{{ ['a', 'b']|join(', ') }}{{ [1, 2]|join }}{{ users|join(', ', attribute='name') }}"
     "{{ 'abc'|join('-') }}", {"users": [{"name": "x"}, {"name": "y"}]}),
    ("filter_int_float", "{{ '42'|int }}{{ '4.9'|int }}{{ 'z'|int }}{{ 'z'|int(7) }}{{ 3.9|int }}{{ true|int }}"
     "{{ '0x1A'|int(0, 16) }}{{ '1.5'|float }}{{ 'q'|float }}{{ 2|float }}", {}),
    ("filter_round_abs_sum", "{{ 3.7|round }}{{ 2.5|round }}{{ 3.14159|round(2) }}{{ 3.1|round(0, 'ceil') }}"
     "{{ 3.9|round(method='floor') }}{{ -3|abs }}{{ -2.5|abs }}{{ [1, 2, 3]|sum }}{{ [1.5, 2]|sum }}"
     "{{ items|sum(attribute='n') }}", {"items": [{"n": 1}, {"n": 5}]}),
    ("filter_sort_unique_minmax", "{{ [3, 1, 2]|sort }}{{ ['b', 'A', 'c']|sort }}{{ ['b', 'A', 'c']|sort(case_sensitive=true) }}"
     "{{ [3, 1, 2]|sort(reverse=true) }}{{ items|sort(attribute='n')|map(attribute='n')|list }}"
     "{{ [1, 2, 1, 3, 2]|unique|list }}{{ ['a', 'A', 'b']|unique|list }}{{ [4, 9, 2]|max }}{{ [4, 9, 2]|min }}"
     "{{ ['b', 'A']|min }}", {"items": [{"n": 3}, {"n": 1}]}),
    ("filter_dictsort_items", "{{ d|dictsort }}{{ d|dictsort(reverse=true) }}{{ d|dictsort(by='value') }}"
     "{{ d|items|list }}", {"d": {"b": 1, "a": 3, "C": 2}}),
    ("filter_map_select", "{{ msgs|map(attribute='role')|list }}{{ msgs|selectattr('role', 'equalto', 'user')|list|length }}"
     "{{ msgs|rejectattr('role', 'eq', 'user')|map(attribute='content')|join(',') }}"
     "{{ msgs|selectattr('tool_calls', 'undefined')|list|length }}{{ msgs|selectattr('tool_calls')|list|length }}"
     "{{ [1, 2, 3, 4]|select('odd')|list }}{{ [1, 2, 3, 4]|reject('even')|list }}{{ ['a', 'b']|map('upper')|list }}"
     "{{ [1, 0, 2]|select|list }}{{ msgs|map(attribute='missing', default='-')|list }}"
     "{{ ['code', 'search']|reject('equalto', 'code')|join(', ') }}",
     {"msgs": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "tool_calls": [1]},
               {"role": "user", "content": "c"}]}),
    ("filter_tojson", "{{ v|tojson }}|{{ v|tojson(indent=2) }}|{{ v|tojson(ensure_ascii=true) }}|"
     "{{ v|tojson(separators=(',', ':')) }}|{{ v|tojson(sort_keys=true) }}|{{ 'é\"\\n'|tojson }}|{{ [] | tojson(indent=4) }}"
     "|{{ {}|tojson }}|{{ 1.0|tojson }}|{{ none|tojson }}|{{ [1, [2, {}], []]|tojson(indent=1) }}",
     {"v": {"b": [1, 2.5, None, True], "a": {"x": "😀<>&'", "y": "\u0001\u001f\u007f"}}}),
    ("filter_indent_escape_wordcount", "{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|"
     "{{ '<a href=\"x\">&\\'</a>'|e }}|{{ 'one two  three'|wordcount }}|{{ d|attr('k') }}", {"d": {"k": "v"}}),
    ("range_dict", "{{ range(3)|list }}{{ range(1, 7, 2)|list }}{{ range(5, 0, -2)|list }}{{ dict(a=1, b='x') }}", {}),
    ("is_defined_globals", "{{ strftime_now is defined }}{{ raise_exception is defined }}{{ range is defined }}"
     "{{ namespace is defined }}{{ nothing is defined }}{{ tools is none }}{{ documents is none }}", {}),
    ("message_equality", "{% set users = messages|selectattr('role', 'equalto', 'user')|list %}"
     "{% for m in messages %}{{ m == users[-1] }}{% endfor %}",
     {"messages": [USER1, ASSISTANT1, USER2]}),
    ("tojson_slice", "{% set out = {'name': 'f', 'arguments': {'a': 1}}|tojson %}{{ out[:-1] }}", {}),
    ("unicode_passthrough", "{{ s }}|{{ s|length }}|{{ s[0] }}|{{ s|upper }}", {"s": "日本😀é"}),
    # Failures: jinja2 raises, so must fp6serve.
    ("error_raise_exception", "a{{ raise_exception('custom failure: ' ~ 42) }}", {}),
    ("error_undefined_attribute_chain", "{{ missing.attr }}", {}),
    ("error_undefined_item_chain", "{{ m.nope.deeper }}", {"m": {}}),
    ("error_str_plus_int", "{{ 'a' + 1 }}", {}),
    ("error_undefined_plus", "{{ missing + 'a' }}", {}),
    ("error_namespace_assign", "{% set d = {} %}{% set d.a = 1 %}", {}),
    ("error_range_too_big", "{{ range(200000)|length }}", {}),
    ("error_tojson_undefined", "{{ missing|tojson }}", {}),
    ("error_list_append", "{% set l = [] %}{{ l.append(1) }}", {}),
    ("error_iterate_none", "{% for x in none %}{% endfor %}", {}),
    ("error_compare_types", "{{ 1 < 'a' }}", {}),
    ("error_divide_by_zero", "{{ 1 / 0 }}", {}),
    ("error_empty_messages_index", "{{ messages[0]['role'] }}", {}),
]


def main():
    out = {
        "generator": "tools/gen_chat_template_goldens.py",
        "jinja2_version": jinja2.__version__,
        "python": sys.version.split()[0],
        "templates": {},
        "features": [],
    }
    for stem, (tokens, conversations, tool_cases) in REAL_TEMPLATES.items():
        path = TEMPLATES / f"{stem}.jinja"
        source = path.read_text(encoding="utf-8")
        cases = []
        for conv in conversations:
            for agp in (False, True):
                case = {"name": f"{conv}/agp={int(agp)}", "messages": CONVERSATIONS[conv],
                        "add_generation_prompt": agp, "extra": tokens}
                case.update(render(source, CONVERSATIONS[conv], agp, tokens))
                cases.append(case)
        for name, messages, extra in tool_cases:
            variables = dict(tokens)
            variables.update(extra)
            case = {"name": f"{name}/agp=1", "messages": messages, "add_generation_prompt": True, "extra": variables}
            case.update(render(source, messages, True, variables))
            cases.append(case)
        out["templates"][stem] = {"file": path.name, "cases": cases}
    for name, source, variables in FEATURES:
        variables = dict(variables)
        messages = variables.pop("messages", [])
        case = {"name": name, "template": source, "messages": messages, "extra": variables}
        case.update(render(source, messages, False, variables))
        out["features"].append(case)
    target = TEMPLATES / "goldens.json"
    target.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    n_cases = sum(len(t["cases"]) for t in out["templates"].values())
    print(f"wrote {target}: {n_cases} template cases, {len(out['features'])} feature cases")


if __name__ == "__main__":
    main()
