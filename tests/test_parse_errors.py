"""jsonargparse's and argparse's parse errors as the CLI prints them: one sentence naming the option and the fix.

The messages below are the ones jsonargparse 4 raises for the cloze recipes (captured from real runs)."""

from __future__ import annotations

from lightning_peft.cli.parse_errors import condense

NULL_LABEL_WORD = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning_peft.modules.base.FineTuneModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lightning_peft.modules.ClozeModule':
        Parser key "task":
          Problem with given class_path 'lightning_peft.tasks.ClozeClassification':
            Parser key "label_words":
              Does not validate against any of the Union subtypes
              Subtypes: [dict[str, list[str] | str], <class 'NoneType'>]
              Errors:
                - Does not validate against any of the Union subtypes
                  Subtypes: [list[str], <class 'str'>]
                  Errors:
                    - Expected a <class 'list'>
                    - Expected a <class 'str'>
                  Given value type: <class 'NoneType'>
                  Given value: None
                - Expected a <class 'NoneType'>
              Given value type: <class 'dict'>
              Given value: {'entity': 'entity', 'human': None, 'location': 'location'}
    - Expected a <class 'NoneType'>
  Given value type: <class 'dict'>
  Given value: {'class_path': 'lightning_peft.modules.ClozeModule', 'init_args': {'backbone': 'smollm2-135m'}}"""


def test_an_empty_yaml_entry_names_its_key():
    assert condense(NULL_LABEL_WORD) == ("model.task.label_words.human is empty where list or str is expected (in YAML, "
                                         "`key:` with nothing after it is null); fill it in or remove it.")


def test_a_misspelt_option_of_a_group_or_on_the_command_line_is_an_unknown_option():
    assert condense("Group 'pet' does not accept option 'generation'").startswith(
        "unknown option 'generation' under pet; check its spelling against the command's --help")
    assert condense("unrecognized arguments: --pet.generatoins 2").startswith(
        "unknown option --pet.generatoins; check its spelling")


def test_text_where_a_list_is_expected_says_how_to_write_a_list():
    message = condense('Parser key "pet.patterns":\n  Expected a <class \'list\'>. Got value: {text} Topic: {mask}')
    assert message == ("pet.patterns must be a list (YAML: one '- item' per line, or [\"a\", \"b\"] on the command line), "
                       "got '{text} Topic: {mask}'.")


def test_an_empty_entry_of_a_plain_type_names_its_key_too():
    message = condense('Parser key "pet.seeds":\n  Expected a <class \'list\'>. Got value: None')
    assert message.startswith("pet.seeds is empty where list is expected (in YAML, `key:` with nothing after it is null)")


def test_a_stray_value_is_an_unexpected_argument_not_an_option():
    assert condense("unrecognized arguments: foo").startswith("unexpected argument 'foo': options are written --name value")
