#!/usr/bin/env python3
"""Deterministic generator of tiny children's stories for phase 1 (language).

Produces simple, short stories (4-8 sentences) from hand-written word lists
and sentence templates, so the demo can train offline without downloading a
corpus.  Stories are separated by lines equal to <|endoftext|>.

    python3 scripts/gen_stories.py                      # writes both default files
    python3 scripts/gen_stories.py --count 400 --seed 1 --out data/stories/stories.txt

Only the standard library is used; the same seed always gives the same file.
"""

import argparse
import os
import random

SEP = "<|endoftext|>"

HEROES = [
    # (name, kind, pronoun)
    ("Pip", "rabbit", "he"), ("Mia", "girl", "she"), ("Tom", "boy", "he"),
    ("Lulu", "cat", "she"), ("Benny", "bear", "he"), ("Daisy", "duck", "she"),
    ("Max", "dog", "he"), ("Rosa", "mouse", "she"), ("Finn", "fox", "he"),
    ("Ella", "girl", "she"), ("Sam", "boy", "he"), ("Nina", "owl", "she"),
    ("Otto", "frog", "he"), ("Ruby", "hen", "she"), ("Leo", "lion cub", "he"),
    ("Bella", "pony", "she"), ("Toby", "turtle", "he"), ("Lily", "girl", "she"),
    ("Jack", "boy", "he"), ("Molly", "cow", "she"), ("Ziggy", "squirrel", "he"),
    ("Kiki", "kitten", "she"), ("Bo", "puppy", "he"), ("Anna", "girl", "she"),
    ("Ben", "boy", "he"), ("Polly", "parrot", "she"), ("Gus", "goat", "he"),
    ("Hazel", "hedgehog", "she"), ("Milo", "mole", "he"), ("Tess", "tiger cub", "she"),
]
FRIENDS = [
    ("Sunny", "bird", "she"), ("Ollie", "otter", "he"), ("Grandma", "grandma", "she"),
    ("Dad", "dad", "he"), ("Mom", "mom", "she"), ("Bobo", "bee", "he"),
    ("Wendy", "worm", "she"), ("Rex", "dog", "he"), ("Coco", "crab", "she"),
    ("Teddy", "teddy bear", "he"), ("Luna", "lamb", "she"), ("Dot", "ladybug", "she"),
]
ADJ = ["little", "small", "happy", "curious", "kind", "brave", "shy", "silly",
       "busy", "gentle", "tiny", "cheerful", "sleepy", "playful", "clever"]
HOMES = ["in a cozy house by the river", "in a small hole under a big tree",
         "on a farm near the hill", "in a little house with a red door",
         "in a busy town", "at the edge of a green forest", "near a quiet pond",
         "in a tall tree in the park", "by the sea", "in a warm barn"]
LIKES = ["play in the garden", "run in the grass", "look at the clouds",
         "sing songs", "draw pictures", "jump in puddles", "pick flowers",
         "read books", "splash in the pond", "count the stars", "dance",
         "build towers with blocks", "eat red apples", "climb small hills"]
OBJECTS = [("ball", "red"), ("hat", "blue"), ("kite", "yellow"), ("toy boat", "little"),
           ("book", "old"), ("scarf", "green"), ("shoe", "pink"), ("cup", "shiny"),
           ("drum", "small"), ("teddy", "soft"), ("spoon", "silver"), ("box", "wooden"),
           ("bell", "golden"), ("sock", "striped"), ("crayon", "purple")]
HIDING = ["under the bed", "behind the tree", "in the tall grass", "under a big leaf",
          "next to the pond", "inside an old box", "on top of the shelf",
          "behind the door", "under the bench", "in the sand"]
SEARCH = ["in the kitchen", "by the fence", "near the pond", "in the garden",
          "under the table", "behind the barn", "on the path", "in the toy box"]
PLACES = ["the park", "the beach", "the forest", "the farm", "the lake",
          "the hill", "the market", "the garden", "the meadow", "the library"]
FEARS = ["the dark", "the loud thunder", "the big dog next door", "the deep water",
         "the tall slide", "the strong wind", "the quiet night"]
SKILLS = [("swim", "swimming"), ("ride a bike", "riding a bike"), ("bake a cake", "baking"),
          ("fly a kite", "flying a kite"), ("tie a bow", "tying bows"),
          ("climb a tree", "climbing"), ("whistle", "whistling"), ("skip a rope", "skipping")]
TREATS = ["cookies", "berries", "apples", "carrots", "cheese", "cake", "honey", "seeds", "grapes"]
TIMES = ["morning", "sunny day", "rainy day", "cold morning", "warm afternoon", "windy day"]
FEEL_BAD = ["sad", "upset", "worried", "grumpy", "lonely"]
FEEL_GOOD = ["happy", "glad", "proud", "excited", "very happy"]
TROUBLE = [("a little bird", "had a hurt wing"), ("a small kitten", "was stuck in a tree"),
           ("a baby duck", "could not find its mother"), ("an old turtle", "was stuck on its back"),
           ("a tiny ant", "could not carry a big crumb"), ("a young deer", "was lost in the woods")]
GIFTS = ["a card with a big sun on it", "a crown made of flowers", "a drawing of the family",
         "a cake with berries on top", "a necklace of shiny shells", "a little clay pot"]
WHO_BIRTHDAY = ["Mom", "Dad", "Grandma", "Grandpa", "Aunt Rose", "Uncle Joe"]


def full(f):
    """How a friend is introduced: "Sunny the bird", but just "Mom"."""
    name, kind, _ = f
    return name if kind.lower() in name.lower() or name.lower() in kind.lower() else f"{name} the {kind}"


def cap(s):
    return s[0].upper() + s[1:]


def intro(r, h):
    name, kind, p = h
    adj = r.choice(ADJ)
    a = "an" if adj[0] in "aeiou" else "a"
    return r.choice([
        f"Once upon a time, there was {a} {adj} {kind} named {name}.",
        f"{name} was {a} {adj} {kind} who lived {r.choice(HOMES)}.",
        f"One {r.choice(TIMES)}, {name} the {kind} woke up early.",
        f"There was once {a} {adj} {kind}. {cap(p)} was called {name}.",
        f"In a land not far away lived {a} {adj} {kind} named {name}.",
    ])


def likes(r, h):
    name, _, p = h
    return r.choice([
        f"{name} loved to {r.choice(LIKES)}.",
        f"Every day, {p} liked to {r.choice(LIKES)}.",
        f"{cap(p)} liked to {r.choice(LIKES)} with {his(p)} friends.",
    ])


def his(p):
    return {"he": "his", "she": "her"}[p]


def him(p):
    return {"he": "him", "she": "her"}[p]


def ending(r, h, f=None):
    name, _, p = h
    opts = [
        f"At the end of the day, {name} was {r.choice(FEEL_GOOD)}.",
        f"That night, {name} went to bed with a big smile.",
        f"{name} smiled all the way home.",
        f"It was the best day ever.",
    ]
    if f:
        opts += [f"From that day on, {name} and {f[0]} were best friends.",
                 f"{name} gave {f[0]} a big hug."]
    return r.choice(opts)


def story_lost(r, h, f):
    name, _, p = h
    obj, col = r.choice(OBJECTS)
    where = r.choice(HIDING)
    s1, s2 = r.sample(SEARCH, 2)
    return [
        intro(r, h),
        r.choice([f"{cap(p)} had a {col} {obj} that {p} loved very much.",
                  f"{name} had a favorite toy. It was a {col} {obj}."]),
        r.choice([f"One day, {name} could not find the {obj}.",
                  f"But one day, the {obj} was gone."]),
        f"{name} felt {r.choice(FEEL_BAD)}.",
        r.choice([f"{full(f)} said, \"Do not worry. I will help you look.\"",
                  f"{cap(p)} asked {full(f)} for help."]),
        f"They looked {s1} and {s2}.",
        r.choice([f"At last, they found the {obj} {where}!",
                  f"Then {f[0]} shouted, \"Look! It is {where}!\""]),
        r.choice([f"{name} learned that it is good to ask for help.",
                  f"\"Thank you, {f[0]}!\" said {name}.", ending(r, h, f)]),
    ]


def story_share(r, h, f):
    name, _, p = h
    t = r.choice(TREATS)
    return [
        intro(r, h),
        r.choice([f"One day, {name} had a basket full of {t}.",
                  f"{cap(p)} found some sweet {t} {r.choice(HIDING)}."]),
        f"{full(f)} came by and looked at the {t}.",
        r.choice([f"At first, {name} did not want to share.",
                  f"\"These are all mine,\" said {name}."]),
        f"But then {p} saw that {f[0]} looked {r.choice(FEEL_BAD)}.",
        r.choice([f"So {name} gave half of the {t} to {f[0]}.",
                  f"\"Here, you can have some,\" said {name}."]),
        r.choice([f"They ate the {t} together and laughed.",
                  f"The {t} tasted even better when they shared."]),
        r.choice([f"{name} learned that sharing makes everyone happy.", ending(r, h, f)]),
    ]


def story_fear(r, h, f):
    name, _, p = h
    fear = r.choice(FEARS)
    return [
        intro(r, h),
        f"{name} was afraid of {fear}.",
        r.choice([f"When {p} thought about it, {p} wanted to hide.",
                  f"{cap(p)} did not like {fear} at all."]),
        r.choice([f"{f[0]} sat next to {him(p)} and held {his(p)} hand.",
                  f"{full(f)} came to see what was wrong."]),
        r.choice([f"\"Being brave does not mean you are not scared,\" said {f[0]}.",
                  f"\"I am here with you,\" said {f[0]}."]),
        r.choice([f"{name} took a deep breath and counted to three.",
                  f"{name} closed {his(p)} eyes and then opened them again."]),
        r.choice([f"{cap(fear)} was not so scary after all.",
                  f"Soon {name} was not afraid anymore."]),
        r.choice([f"{name} felt brave and proud.", ending(r, h, f)]),
    ]


def story_learn(r, h, f):
    name, _, p = h
    verb, ing = r.choice(SKILLS)
    return [
        intro(r, h),
        f"{name} wanted to learn to {verb}.",
        r.choice([f"The first time {p} tried, it did not work.",
                  f"{cap(p)} tried and tried, but it was hard."]),
        f"{name} felt {r.choice(FEEL_BAD)} and wanted to stop.",
        r.choice([f"\"Try one more time,\" said {full(f)}.",
                  f"{f[0]} showed {him(p)} how to do it slowly."]),
        f"So {name} tried again, and again.",
        r.choice([f"At last, {p} could {verb}!", f"Then one day, {name} did it!"]),
        r.choice([f"{name} learned that practice helps.",
                  f"Now {name} loves {ing} more than anything.", ending(r, h, f)]),
    ]


def story_help(r, h, f):
    name, _, p = h
    who, trouble = r.choice(TROUBLE)
    place = r.choice(PLACES)
    return [
        intro(r, h),
        r.choice([f"One day, {name} went to {place}.",
                  f"{name} and {f[0]} went for a walk to {place}."]),
        f"There {p} saw {who} that {trouble}.",
        r.choice([f"\"Oh no! I must help,\" said {name}.",
                  f"{name} knew {p} had to help."]),
        r.choice([f"{cap(p)} was very careful and very gentle.",
                  f"{name} asked {f[0]} to help too, and they worked together."]),
        r.choice(["Soon everything was all right again.", "After a while, the problem was fixed."]),
        r.choice([f"\"Thank you!\" said the {who.split(' ', 1)[1]}.",
                  f"{cap(who)} was very thankful."]),
        r.choice([f"{name} felt warm inside. Helping felt good.", ending(r, h, f)]),
    ]


def story_outing(r, h, f):
    name, _, p = h
    t = r.choice(TREATS)
    return [
        intro(r, h),
        r.choice([f"One {r.choice(TIMES)}, {name} went to the beach with {f[0]}.",
                  f"{name} and {f[0]} went to the beach to play."]),
        r.choice(["They built a big sandcastle with a tall tower.",
                  "They made a sandcastle and put shells on top."]),
        "Then a big wave came and washed it away.",
        f"{name} felt {r.choice(FEEL_BAD)}.",
        r.choice([f"\"Let us build a new one, even bigger!\" said {f[0]}.",
                  f"But {f[0]} laughed and picked up the bucket."]),
        f"So they built a new castle, far from the water, and ate {t} on the sand.",
        ending(r, h, f),
    ]


def story_gift(r, h, f):
    name, _, p = h
    who = r.choice(WHO_BIRTHDAY)
    gift = r.choice(GIFTS)
    return [
        intro(r, h),
        f"Tomorrow was {who}'s birthday.",
        r.choice([f"{name} wanted to make a special gift.",
                  f"{name} did not have any money, but {p} had an idea."]),
        f"{cap(p)} worked all afternoon and made {gift}.",
        r.choice([f"It was not perfect, but {p} made it with love.",
                  f"{f[0]} helped {him(p)} wrap it in paper."]),
        f"The next day, {name} gave the gift to {who}.",
        r.choice([f"{cap(who)} smiled and said, \"This is the best gift of all!\"",
                  f"{cap(who)} gave {name} a big hug."]),
        r.choice([f"{name} learned that the best gifts come from the heart.", ending(r, h, f)]),
    ]


def story_rain(r, h, f):
    name, _, p = h
    return [
        intro(r, h),
        likes(r, h),
        r.choice([f"But today it was raining, and {name} had to stay inside.",
                  f"One day, it rained and rained all day long."]),
        f"{name} felt {r.choice(FEEL_BAD)} and looked out of the window.",
        r.choice([f"Then {f[0]} came with a box of paints.",
                  f"Then {f[0]} said, \"Let us make a fort with blankets!\""]),
        r.choice(["They played and laughed until the sun came out.",
                  "They had so much fun that they forgot about the rain."]),
        r.choice(["When the rain stopped, there was a big rainbow in the sky.",
                  f"{name} learned that a rainy day can be fun too."]),
        ending(r, h, f),
    ]


PLOTS = [story_lost, story_share, story_fear, story_learn, story_help,
         story_outing, story_gift, story_rain]


def make_story(r):
    h = r.choice(HEROES)
    f = r.choice([x for x in FRIENDS if x[0] != h[0]])
    sents = r.choice(PLOTS)(r, h, f)
    # Keep 5-8 template sentences: the intro, the plot setup and the last one are
    # always kept; other middle sentences may be dropped, order is preserved.
    n = r.randint(5, len(sents))
    middle = sents[1:-1]
    # The first middle sentence sets up the plot and is always kept.
    drop = set(r.sample(range(1, len(middle)), len(sents) - n))
    kept = [sents[0]] + [s for i, s in enumerate(middle) if i not in drop] + [sents[-1]]
    return " ".join(kept)


def generate(count, seed):
    r = random.Random(seed)
    seen, out = set(), []
    tries = 0
    while len(out) < count and tries < count * 50:
        tries += 1
        s = make_story(r)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def write(path, stories):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii", newline="\n") as fh:
        for s in stories:
            fh.write(s + "\n" + SEP + "\n")
    os.replace(tmp, path)


def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "stories")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, help="number of stories (default: both files)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", help="output file")
    a = ap.parse_args()
    if a.out or a.count:
        out = a.out or os.path.join(root, "stories.txt")
        stories = generate(a.count or 400, a.seed)
        write(out, stories)
        print(f"{out}: {len(stories)} stories")
        return
    for name, count, seed in (("stories.txt", 400, 1), ("stories-valid.txt", 40, 2)):
        out = os.path.normpath(os.path.join(root, name))
        stories = generate(count, seed)
        write(out, stories)
        print(f"{out}: {len(stories)} stories, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
