import pytest

from lightning_peft.cli.launch_env import LaunchEnvironmentError, check_launch_environment


@pytest.mark.parametrize("environ", [{}, {"MASTER_PORT": "1234"}, {"LOCAL_RANK": "1", "WORLD_SIZE": "2"},
                                     {"LOCAL_RANK": "0"}])
def test_consistent_or_absent_launch_variables_pass(environ):
    check_launch_environment(2, environ)


def test_world_size_disagreeing_with_the_trainer_is_refused():
    with pytest.raises(LaunchEnvironmentError, match=r"started 1 process\(es\).*asks for 2.*unset LOCAL_RANK, WORLD_SIZE"):
        check_launch_environment(2, {"LOCAL_RANK": "0", "WORLD_SIZE": "1"})
    with pytest.raises(LaunchEnvironmentError, match="not a number"):
        check_launch_environment(2, {"LOCAL_RANK": "0", "WORLD_SIZE": "two"})
