"""Generate src/reflexblue/security/common-passwords.txt, the list of common passwords the policy rejects.

Usage:
    python scripts/common_passwords.py DJANGO_WHEEL ZXCVBN_WHEEL > src/reflexblue/security/common-passwords.txt

DJANGO_WHEEL is a Django wheel (tested with 5.2.17): its django/contrib/auth/common-passwords.txt.gz
contains Royce Williams' list of common passwords (19,640 entries in 5.2.17). ZXCVBN_WHEEL is a wheel
of the ``zxcvbn`` package (tested with 4.5.0): the ``passwords`` list in zxcvbn/frequency_lists.py
contains 30,000 common passwords, most frequent first. Both are read at build time only.

The output keeps three kinds of entries, lowercased, ASCII-only and of at least 12 characters,
because shorter passwords fail the length rule anyway:
1. every entry of both lists;
2. the most frequent short passwords of both lists with the endings people append most often
   (digit runs, years, "!"), and doubled ("monkeymonkey");
3. the hand-written entries below: keyboard walks, digit runs, and placeholder, product and
   default passwords.
Passwords made of one short repeated unit ("aaaaaaaaaaaa", "abcabcabcabc") or of one run of
consecutive characters ("abcdefghijklm") are rejected by code in reflexblue.security.passwords,
so they are left out here.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
import zipfile

MIN_LENGTH = 12
#: How many of the most frequent short passwords get common endings appended.
BASES_WITH_ENDINGS = 400
#: How many of them also get years appended.
BASES_WITH_YEARS = 120
ENDINGS = (
    "1", "12", "123", "1234", "12345", "123456", "1234567", "12345678", "123456789", "1234567890",
    "!", "1!", "12!", "123!", "1234!", "!!", "01", "007", "69", "99", "00", "11", "22", "@123", "#1",
)
YEARS = tuple(str(year) for year in range(1990, 2031))

KEYBOARD_WALKS = (
    "qwertyuiopasdfghjkl", "qwertyuiop", "asdfghjkl", "zxcvbnm", "qwertzuiop", "azertyuiop", "1qaz2wsx3edc4rfv",
    "1qaz2wsx3edc", "zaq12wsx", "!qaz2wsx", "!qaz@wsx#edc", "1qaz@wsx#edc", "qazwsxedcrfvtgb", "qazwsxedcrfv",
    "qwerasdfzxcv", "asdfqwerzxcv", "zxcvasdfqwer", "1q2w3e4r5t6y", "1q2w3e4r5t6y7u8i", "q1w2e3r4t5y6",
    "q1w2e3r4t5y6u7", "qwerty123456", "qwertyuiop123", "qwertyuiop12", "qwertyuiop1234", "qwertyuiop!",
    "asdfghjkl123", "asdfghjkl1234", "asdfghjkl;'", "zxcvbnm123456", "zxcvbnm,./", "zxcvbnm12345",
    "1234qwerasdf", "1234qwerasdfzxcv", "qwer1234asdf", "qweasdzxc123", "123qweasdzxc", "qweasdzxcqwe",
    "poiuytrewq12", "lkjhgfdsa123", "mnbvcxz12345", "0987654321qwerty", "1234567890qwertyuiop",
    "!@#$%^&*()_+", "!@#$%^&*()", "1234567890-=", "`1234567890-=", "qwertyuiop[]", "qwertyuiop[]\\",
    "1qazxsw23edcvfr4", "zaq1xsw2cde3", "zaq1zaq1zaq1", "xsw2zaq1xsw2", "qazxswedcvfr", "wsxedcrfvtgb",
)
DIGIT_PATTERNS = (
    "123456789012", "1234567890123", "12345678901234", "123456789123", "123456789123456789",
    "098765432109", "0987654321098", "123456789987654321", "12345678987654321", "123456654321",
    "123123123123", "121212121212", "112233445566", "111222333444", "010203040506", "102030405060",
    "147258369147", "147258369123", "159753159753", "246813579000", "314159265358", "31415926535",
    "123454321123", "000000000001", "100000000000", "999999999990", "11223344556677", "123321123321",
)
PLACEHOLDERS = (
    "password1234", "password12345", "password123456", "password!123", "password@123", "password#123",
    "passwordpassword", "mypassword123", "mypassword1234", "newpassword123", "newpassword1234",
    "oldpassword123", "temppassword", "temppassword1", "temppassword123", "temporarypassword",
    "defaultpassword", "default12345", "changeme1234", "changeme12345", "changeme123!", "changemenow!",
    "changemeplease", "pleasechangeme", "changethispassword", "changemechangeme", "changeme2024",
    "changeme2025", "letmein12345", "letmeinplease", "letmeinletmein", "welcome12345", "welcome123!",
    "welcometothejungle", "iloveyou1234", "iloveyouiloveyou", "administrator", "administrator1",
    "administrator123", "admin1234567", "adminadmin123", "adminpassword", "rootpassword", "superuser123",
    "secretpassword", "topsecret123", "supersecret123", "verysecurepassword", "securepassword",
    "securepassword1", "strongpassword", "strongpassword1", "p@ssw0rd1234", "p@ssword1234", "pa$$word1234",
    "passw0rd1234", "passw0rd123!", "trustno1trustno1", "qwerty123456!", "correcthorsebatterystaple",
    "thequickbrownfox", "thequickbrownfoxjumpsoverthelazydog", "abc123abc123", "abcd1234abcd",
    "abcdef123456", "a1b2c3d4e5f6", "1a2b3c4d5e6f", "aaaaaa111111", "test12345678", "testtest1234",
    "testpassword", "testpassword1", "testpassword123", "demopassword", "demopassword1", "demo12345678",
    "guestpassword", "guest1234567", "useruser1234", "username1234", "apiuser12345", "apipassword1",
    "apipassword123", "externalapi123", "integration123", "reflexblue123", "reflexblue1234", "reflexblue2024",
    "reflexblue2025", "reflexblue!23", "reflexbluepassword", "reflexblueapi", "reflex-blue-123",
    "webshop123456", "webshoppassword", "serviceaccount", "serviceaccount1", "service123456",
)


def read_django(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read("django/contrib/auth/common-passwords.txt.gz")
    return gzip.decompress(data).decode("utf-8").splitlines()


def read_zxcvbn(wheel: str) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("zxcvbn/frequency_lists.py").decode("utf-8")
    namespace: dict[str, object] = {}
    exec(compile(source, "frequency_lists.py", "exec"), namespace)  # noqa: S102 - a data module of a pinned wheel
    lists = namespace["FREQUENCY_LISTS"]
    assert isinstance(lists, dict)
    return list(lists["passwords"])


def usable(password: str) -> bool:
    # A line starting with "#" is a comment in the output file, and lines lose surrounding spaces.
    return (
        len(password) >= MIN_LENGTH
        and password.isascii()
        and password.isprintable()
        and password == password.strip()
        and not password.startswith("#")
        and not password.startswith('"')  # spreadsheet artefacts such as "1,00001e+14"
    )


def interleave(first: list[str], second: list[str]) -> list[str]:
    """Merge two lists ordered by frequency, most frequent first, without repeats."""
    merged: list[str] = []
    seen: set[str] = set()
    for pair in zip(first, second):
        for password in pair:
            if password not in seen:
                seen.add(password)
                merged.append(password)
    return merged


def derived(bases: list[str]) -> set[str]:
    result: set[str] = set()
    short = [base for base in bases if 4 <= len(base) < MIN_LENGTH and re.fullmatch(r"[a-z0-9!@#$.]+", base)]
    for rank, base in enumerate(short[:BASES_WITH_ENDINGS]):
        for ending in ENDINGS:
            result.add(base + ending)
        if rank < BASES_WITH_YEARS:
            for year in YEARS:
                result.add(base + year)
                result.add(base + year + "!")
        result.add(base + base)
    return result


def main(django_wheel: str, zxcvbn_wheel: str) -> None:
    django = [line.strip().lower() for line in read_django(django_wheel) if line.strip()]
    zxcvbn = [line.strip().lower() for line in read_zxcvbn(zxcvbn_wheel) if line.strip()]
    entries = set(django) | set(zxcvbn)
    entries |= derived(interleave(zxcvbn, django))
    entries |= set(KEYBOARD_WALKS) | set(DIGIT_PATTERNS) | set(PLACEHOLDERS)
    kept = sorted(password for password in entries if usable(password))

    out = io.StringIO()
    out.write("# Common passwords of 12 or more characters, rejected by reflexblue.security.passwords.\n")
    out.write("# One password a line, lowercased; the policy compares after NFKC normalisation and case folding.\n")
    out.write("# Generated by scripts/common_passwords.py from two lists: Royce Williams' common passwords as\n")
    out.write("# shipped in Django 5.2.17 (BSD licence) and the password frequency list of zxcvbn 4.5.0 (MIT\n")
    out.write("# licence). It adds the most frequent short passwords of both with common endings (digit runs,\n")
    out.write("# years, '!') or doubled, and hand-written keyboard walks, digit runs and default passwords.\n")
    for password in kept:
        out.write(password + "\n")
    sys.stdout.write(out.getvalue())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
