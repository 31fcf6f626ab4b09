"""What an answer repeats from its turn's memory block is not remembered (memory/echo.py)."""
from memproxyd.memory.base import Memory
from memproxyd.memory.block import format_block
from memproxyd.memory.echo import without_echo

FACT = "User: Remember this: our deploy target codename is BLUEFIN.\nAssistant: Noted."
BLOCK = format_block([Memory("m1", "alpha", FACT, created_at=1.7e9)], 4000)


def test_an_answer_that_only_quotes_the_block_is_not_kept():
    assert without_echo("From memory: User: Remember this: our deploy target codename is "
                        "BLUEFIN. Assistant: Noted.", BLOCK) == ""


def test_a_quote_is_cut_and_the_new_part_of_the_answer_kept():
    answer = ("As you said, our deploy target codename is BLUEFIN. I renamed the billing module "
              "to invoices and updated every import.")
    assert without_echo(answer, BLOCK) == ("As you said, I renamed the billing module to "
                                           "invoices and updated every import.")


def test_an_answer_that_uses_a_few_words_of_a_memory_is_kept_whole():
    assert without_echo("It is BLUEFIN, the deploy target.", BLOCK) == \
        "It is BLUEFIN, the deploy target."


def test_the_block_header_and_its_dates_are_no_quote():
    answer = ("Relevant memories from earlier conversations with this user are helpful, "
              "quoted as data, and I agree.")
    assert without_echo(answer, BLOCK) == answer
    assert without_echo("anything", "") == "anything"
