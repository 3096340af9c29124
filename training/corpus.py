"""A story grammar that writes the tinytales corpus: characters, places, objects, events and dialogue.

Stories are short children's tales with pronoun agreement (she/her, he/him/his), a/an agreement,
dialogue and simple causality; ``generate_stories(n, seed)`` is deterministic for a seed.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

GIRLS = ("Lily", "Mia", "Sara", "Anna", "Emma", "Lucy", "Zoe", "Ella", "Amy", "Rosa", "Kate", "Nina", "Sue", "Jane")
BOYS = ("Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Jake", "Bob", "Dan", "Eli", "Joe", "Ned")
GIRL_KINDS = ("little girl", "kind girl", "happy girl", "brave girl", "shy girl", "curious girl")
BOY_KINDS = ("little boy", "kind boy", "happy boy", "brave boy", "shy boy", "curious boy")
ANIMAL_KINDS = ("cat", "dog", "bunny", "bear", "duck", "fox", "mouse", "frog")
ANIMAL_ADJ = ("little", "fluffy", "small", "funny", "kind", "happy")

# (place phrase, where one finds things there)
PLACES = (
    ("the garden", ("under a bush", "near the flowers", "behind a big rock")),
    ("the park", ("under a tree", "near the swings", "by the pond")),
    ("the forest", ("under a log", "next to a tall tree", "in the grass")),
    ("the beach", ("in the sand", "near the water", "under a rock")),
    ("the yard", ("under the fence", "near the gate", "in the grass")),
    ("the farm", ("in the barn", "near the pigs", "under the hay")),
    ("the kitchen", ("under the table", "behind the chair", "on a shelf")),
    ("the hill", ("on the top", "under a tree", "next to a big rock")),
    ("the river", ("by the water", "under a bridge", "near a boat")),
    ("the school", ("under a desk", "near the door", "in a box")),
)
HOME_SPOTS = ("under the bed", "behind the sofa", "in the toy box", "under the table", "in the closet", "by the door")

# (noun, what you do with it)
OBJECTS = (
    ("ball", "played catch with it"), ("kite", "flew it in the wind"), ("box", "looked inside it"),
    ("book", "read it together"), ("hat", "took turns wearing it"), ("doll", "played house with it"),
    ("boat", "sailed it in the pond"), ("cup", "filled it with water"), ("shell", "held it up to the sun"),
    ("flower", "put it in a vase"), ("stone", "kept it in a safe place"), ("key", "tried it on every door"),
    ("car", "raced it on the floor"), ("bell", "rang it again and again"), ("drum", "played a song on it"),
    ("apple", "shared it at lunch"), ("egg", "kept it warm"), ("umbrella", "danced under it"),
)
ADJECTIVES = ("red", "blue", "green", "yellow", "pink", "big", "small", "shiny", "old", "soft", "little", "new",
              "orange", "purple")
FOODS = ("a cake", "cookies", "soup", "a pie", "bread", "pancakes")
FEELINGS_GOOD = ("happy", "glad", "proud", "excited")
FEELINGS_BAD = ("sad", "upset", "scared", "worried")
TIMES = ("One day", "One sunny day", "One morning", "One afternoon", "Later that day", "The next day")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class Char:
    """A story character: how they are named and which pronouns agree with them."""

    name: str
    female: bool

    @property
    def he(self) -> str:
        return "she" if self.female else "he"

    @property
    def him(self) -> str:
        return "her" if self.female else "him"

    @property
    def his(self) -> str:
        return "her" if self.female else "his"


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


class Teller:
    """Builds one story from a random source; every choice goes through ``self.r``."""

    def __init__(self, r: random.Random):
        self.r = r
        self.c = r.choice

    def char(self, exclude: tuple[str, ...] = ()) -> tuple[Char, str]:
        """A character and the phrase that introduces them."""
        r = self.r
        while True:
            female = r.random() < 0.5
            name = self.c(GIRLS if female else BOYS)
            if name not in exclude:
                break
        if r.random() < 0.2:
            kind = f"{self.c(ANIMAL_ADJ)} {self.c(ANIMAL_KINDS)}"
        else:
            kind = self.c(GIRL_KINDS if female else BOY_KINDS)
        return Char(name, female), f"{article(kind)} {kind} named {name}"

    def thing(self) -> tuple[str, str, str]:
        """(noun phrase with article, bare noun, what to do with it)."""
        noun, use = self.c(OBJECTS)
        if self.r.random() < 0.7:
            adj = self.c(ADJECTIVES)
            return f"{article(adj)} {adj} {noun}", f"{adj} {noun}", use
        return f"{article(noun)} {noun}", noun, use

    def opening(self, a: Char, intro: str, place: str) -> list[str]:
        # "time" without its comma too: BPE glues punctuation to words, so a prompt that stops at
        # "Once upon a time" is only seen in training if the bare word occurs.
        once = "Once upon a time," if self.r.random() < 0.6 else "Once upon a time"
        k = self.r.randrange(5)
        if k == 0:
            return [f"{once} there was {intro}."]
        if k == 1:
            return [f"{once} in a small town, there lived {intro}."]
        if k == 2:
            return [f"{once} there was {intro}.", f"{a.name} loved to play in {place}."]
        if k == 3:
            return [f"Once upon a time, {intro} lived near {place}."]
        return [f"{once} there was {intro}.", f"{cap(a.he)} was {self.c(('five', 'six', 'four'))} years old."]

    def ending(self, a: Char, b: Char) -> list[str]:
        k = self.r.randrange(6)
        if k == 0:
            return [f"From that day on, {a.name} and {b.name} were best friends."]
        if k == 1:
            return ["It was the best day ever."]
        if k == 2:
            return [f"{a.name} went home with a big smile on {a.his} face."]
        if k == 3:
            return [f"That night, {a.name} went to sleep feeling {self.c(FEELINGS_GOOD)}."]
        if k == 4:
            return ["They had a lot of fun together.", "The end."]
        return [f"{a.name} and {b.name} laughed and played until the sun went down."]

    # -- plots: each returns sentences after the opening ------------------------------------------
    def plot_find_give(self, a: Char, b: Char, place: str, spots: tuple[str, ...]) -> list[str]:
        np_, noun, use = self.thing()
        s = [f"{self.c(TIMES)}, {a.name} went to {place}.",
             f"{cap(a.he)} found {np_} {self.c(spots)}.",
             f"{a.name} was very {self.c(FEELINGS_GOOD)}."]
        s.append(f"{cap(a.he)} ran to {a.his} friend {b.name} and showed the {noun} to {b.him}.")
        s.append(f"\"Look what I found!\" said {a.name}.")
        if self.r.random() < 0.5:
            s.append(f"\"Wow, it is so pretty,\" said {b.name}.")
            s.append(f"{a.name} gave the {noun} to {b.name}.")
            s.append(f"\"Thank you!\" said {b.name}.")
            s.append(f"{b.name} hugged {a.name}, and they {use}.")
        else:
            s.append(f"{b.name} smiled and said, \"Can we play with it?\"")
            s.append(f"\"Yes, let us play together,\" said {a.name}.")
            s.append(f"So they {use}.")
        return s

    def plot_lost(self, a: Char, b: Char, place: str, spots: tuple[str, ...]) -> list[str]:
        np_, noun, _ = self.thing()
        sp1, sp2 = self.r.sample(HOME_SPOTS, 2)
        s = [f"{a.name} had {np_}.", f"{cap(a.he)} loved {a.his} {noun} very much.",
             f"{self.c(TIMES)}, {a.name} could not find {a.his} {noun}.",
             f"{cap(a.he)} was so {self.c(FEELINGS_BAD)} that {a.he} started to cry."]
        s.append(f"{b.name} saw {a.name} and asked, \"Why are you crying?\"")
        s.append(f"\"I lost my {noun},\" said {a.name}.")
        s.append(f"\"Do not worry. I will help you,\" said {b.name}.")
        s.append(f"They looked {sp1}, but the {noun} was not there.")
        s.append(f"Then they looked {sp2}.")
        s.append(f"At last, {b.name} found the {noun}!")
        s.append(f"{a.name} was so happy that {a.he} hugged {b.name}.")
        s.append(f"\"Thank you for helping me,\" said {a.name}.")
        return s

    def plot_rain(self, a: Char, b: Char, place: str, spots: tuple[str, ...]) -> list[str]:
        food = self.c(FOODS)
        s = [f"{self.c(TIMES)}, {a.name} wanted to play in {place}.",
             "But then it started to rain.",
             f"{a.name} could not go outside, so {a.he} was {self.c(FEELINGS_BAD)}."]
        helper = self.c(("mom", "dad", "grandma", "grandpa"))
        s.append(f"{cap(a.his)} {helper} said, \"Let us make {food} together.\"")
        s.append(f"They made {food} in the kitchen.")
        s.append(f"It smelled so good that {b.name} came to visit.")
        s.append(f"\"Can I have some?\" asked {b.name}.")
        s.append(f"\"Yes, you can,\" said {a.name}, and {a.he} gave some to {b.name}.")
        s.append(f"When the rain stopped, {a.name} and {b.name} went to {place} to play.")
        return s

    def plot_share(self, a: Char, b: Char, place: str, spots: tuple[str, ...]) -> list[str]:
        np_, noun, use = self.thing()
        helper = self.c(("mom", "dad", "teacher"))
        s = [f"{self.c(TIMES)}, {a.name} and {b.name} were playing in {place}.",
             f"They saw {np_} {self.c(spots)}.",
             f"\"It is mine!\" said {a.name}.", f"\"No, it is mine!\" said {b.name}.",
             f"They both pulled the {noun}, and {b.name} fell down.",
             f"{b.name} was {self.c(FEELINGS_BAD)} and started to cry."]
        s.append(f"{a.name}'s {helper} came and said, \"You should share.\"")
        s.append(f"{a.name} felt bad because {a.he} had not been kind.")
        s.append(f"\"I am sorry,\" said {a.name}. \"We can share the {noun}.\"")
        s.append(f"So they took turns, and they {use}.")
        return s

    def plot_noise(self, a: Char, b: Char, place: str, spots: tuple[str, ...]) -> list[str]:
        animal = self.c(ANIMAL_KINDS)
        s = [f"{self.c(TIMES)}, {a.name} was walking in {place} with {b.name}.",
             f"Suddenly, they heard a loud noise {self.c(spots)}.",
             f"{a.name} was scared, and {a.he} held {b.name}'s hand."]
        s.append(f"\"What is that?\" asked {a.name}.")
        s.append(f"{b.name} was brave, so {b.he} went to look.")
        s.append(f"It was only {article(animal)} {animal}!")
        s.append(f"The {animal} was hungry, so {a.name} gave it some food.")
        s.append(f"The {animal} was happy, and {a.name} was not scared anymore.")
        return s

    def plot_help_animal(self, a: Char, b: Char, place: str, spots: tuple[str, ...]) -> list[str]:
        animal = self.c(("bird", "kitten", "puppy", "duck", "bunny"))
        problem, fix = self.c((("was stuck in a tree", "climbed up and got it down"),
                               ("had a hurt leg", "put a soft cloth on its leg"),
                               ("was cold and wet", "wrapped it in a warm blanket"),
                               ("could not find its mom", "helped it look for its mom")))
        s = [f"{self.c(TIMES)}, {a.name} went to {place}.",
             f"{cap(a.he)} saw a {self.c(ANIMAL_ADJ)} {animal} that {problem}.",
             f"\"Oh no, the poor {animal}!\" said {a.name}."]
        s.append(f"{cap(a.he)} called {b.name} to help.")
        s.append(f"Together, they {fix}.")
        s.append(f"The {animal} was safe, and it made a happy sound.")
        s.append(f"{a.name} felt {self.c(FEELINGS_GOOD)} because {a.he} had helped.")
        return s

    PLOTS = ("plot_find_give", "plot_lost", "plot_rain", "plot_share", "plot_noise", "plot_help_animal")

    def story(self) -> str:
        place, spots = self.c(PLACES)
        a, intro = self.char()
        b, b_intro = self.char(exclude=(a.name,))
        s = self.opening(a, intro, place)
        if self.r.random() < 0.5:
            s.append(f"{cap(a.he)} had a friend, {b_intro}.")
        plots = self.r.sample(self.PLOTS, 2 if self.r.random() < 0.25 else 1)
        for p in plots:
            s += getattr(self, p)(a, b, place, spots)
        s += self.ending(a, b)
        return " ".join(s)


def generate_stories(n: int, seed: int) -> list[str]:
    """``n`` stories, each one line of text; the same (n, seed) always gives the same list."""
    r = random.Random(seed)
    teller = Teller(r)
    return [teller.story() for _ in range(n)]


WORD_RE = re.compile(r"[A-Za-z']+")


def words(text: str) -> list[str]:
    """Lower-case words of a text, punctuation dropped (possessive 's split off)."""
    return [w.lower().removesuffix("'s") for w in WORD_RE.findall(text)]


if __name__ == "__main__":  # pragma: no cover
    import sys

    for st in generate_stories(int(sys.argv[1]) if len(sys.argv) > 1 else 3, int(sys.argv[2]) if len(sys.argv) > 2 else 0):
        print(st, end="\n\n")
