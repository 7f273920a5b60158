"""Seeded synthetic datasets with planted signal, for tests, demos and sanity checks.

* ``synthetic_seq`` (``generate_sequences``): items fall into topic clusters; each user
  prefers one or two clusters; each item has one fixed successor in its cluster and the next
  item is that successor with probability ``p_next`` (else a fresh pick from the user's
  clusters, popular items more likely). A sequential model can learn "after X comes Y";
  popularity cannot. Items have titles made of their cluster's words, so text models can
  see the clusters too. No item repeats within a user (like one rating per movie).
* ``synthetic_mind`` (``generate_news``): news titles drawn from ten topic vocabularies plus
  common words, users who prefer one or two topics, histories and clicks mostly on those
  topics (the readers are ``recboard.datasets.simulated_news``'s). A title-based model should
  reach AUC >= 0.8; random scores give 0.5.
* ``synthetic_mind_cold`` (``generate_news(cold_start=True)``): the same generator, with the
  news split into three disjoint pools (60/20/20%): train impressions and every history
  field draw from the first, validation candidates from the second, test candidates from
  the third. No test candidate occurs in anything a model trains on, so an ID model can
  only tie them (AUC 0.5) while a model reading titles can rank them (NRMS, text BERT4Rec).

All are deterministic given the seed; ``build`` ignores ``data_dir``.
"""
from __future__ import annotations

import numpy as np

from recboard.datasets.batches import NewsData, SequenceData, to_ragged
from recboard.datasets.simulated_news import NewsTable, simulate_readers

PREPROCESS_VERSION = 1

TOPICS = {
    "sports": "match coach league striker goal season playoff stadium team championship quarterback "
              "tournament referee pitcher injury trade draft rookie victory defeat score inning "
              "marathon medal olympic racing tennis golf basketball soccer hockey baseball football "
              "athlete captain fans overtime roster transfer",
    "finance": "market stocks investors bank interest rates inflation earnings shares dividend bond "
               "economy recession profit revenue quarter fund trader wallstreet nasdaq currency dollar "
               "mortgage loan credit debt budget tax retirement savings portfolio crypto bitcoin merger "
               "acquisition ipo valuation hedge",
    "politics": "senate congress president election vote campaign governor democrats republicans "
                "impeachment bill lawmakers policy debate candidate ballot poll primary court justice "
                "supreme administration cabinet minister parliament diplomat treaty sanctions mayor "
                "legislation veto hearing testimony whistleblower constitution federal state",
    "health": "doctors patients hospital vaccine virus disease cancer treatment diet nutrition fitness "
              "sleep heart blood brain study researchers symptoms therapy medicine drug clinic nurse "
              "surgery diabetes obesity flu outbreak mental wellness exercise protein vitamins allergy "
              "pregnancy infection pharmacy",
    "tech": "apple google microsoft smartphone iphone android software app update chip processor "
            "startup ai robot algorithm data privacy hackers cybersecurity cloud laptop gadget "
            "battery tesla electric autonomous drone streaming console gaming internet browser "
            "silicon engineers launch device",
    "travel": "flight airline airport passengers hotel resort beach island cruise vacation tourists "
              "destination passport luggage itinerary road trip national park mountain hiking camping "
              "museum tour city guide adventure backpack train ferry coast village landmark scenic "
              "sunset festival map",
    "food": "recipe chef restaurant kitchen dinner breakfast lunch dessert cake chocolate pizza burger "
            "salad soup pasta chicken steak vegan cheese bread baking grill spicy sweet flavor menu "
            "wine coffee cocktail brunch snack thanksgiving turkey pie cookies sauce tacos",
    "weather": "storm hurricane tornado snow rain flood forecast temperatures heat wave cold front "
               "winds thunderstorm blizzard drought wildfire smoke evacuation meteorologist radar "
               "warning advisory freeze frost humidity clouds sunshine lightning hail tropical "
               "cyclone landfall damage outage climate",
    "entertainment": "movie film actor actress director premiere trailer box office oscar netflix "
                     "series episode season finale celebrity singer album concert tour grammy "
                     "hollywood sequel streaming comedy drama star cast studio documentary music "
                     "band awards red carpet rapper",
    "autos": "car truck suv sedan engine horsepower dealership recall mileage fuel hybrid pickup "
             "convertible coupe ford toyota honda chevrolet bmw porsche ferrari speed highway "
             "crash driver transmission brakes tires interior review price model lease garage",
}
COMMON_WORDS = ("the a of in on for with after before how why what new says report first big "
                "best worst top latest inside more could will may this these every here just "
                "amid over under ahead week year today people big small").split()

SEQ_CLUSTERS = {
    "space": "galaxy star orbit rocket nebula planet comet astronaut",
    "ocean": "tide reef harbor whale coral storm sail island",
    "forest": "pine wolf timber moss hunter cabin river fern",
    "desert": "dune mirage cactus oasis nomad sand scorpion canyon",
    "city": "neon subway tower alley rooftop taxi skyline district",
    "castle": "knight dragon crown throne sword kingdom queen siege",
    "music": "guitar rhythm chorus melody drum stage ballad encore",
    "crime": "detective heist alibi witness shadow gangster verdict clue",
    "romance": "heart kiss wedding letter promise summer dance rose",
    "school": "campus teacher exam locker prom graduation recess homework",
}
SEQ_NOUNS = ("story chronicles returns legacy rising nights secret journey quest diaries "
             "affair code game hour road").split()


def _title(words: list) -> str:
    return " ".join(words).capitalize()


def generate_sequences(n_users: int = 600, n_items: int = 300, min_len: int = 12, max_len: int = 40,
                       seed: int = 0, p_next: float = 0.7, name: str = "synthetic_seq") -> SequenceData:
    if not 3 <= min_len <= max_len:
        raise ValueError(f"need 3 <= min_len <= max_len, got {min_len}, {max_len}")
    rng = np.random.default_rng(seed)
    names = list(SEQ_CLUSTERS)
    n_clusters = min(len(names), max(1, n_items // 5))
    cluster_of = np.empty(n_items + 1, dtype=np.int64)
    cluster_of[1:] = rng.permutation(np.arange(n_items) % n_clusters)
    members = [np.flatnonzero(cluster_of[1:] == c) + 1 for c in range(n_clusters)]
    # Popularity inside a cluster (Zipf-like) so the popularity baseline is above random.
    weight = np.zeros(n_items + 1)
    successor = np.zeros(n_items + 1, dtype=np.int64)
    for items in members:
        weight[items] = 1.0 / np.sqrt(1.0 + rng.permutation(len(items)))
        cycle = rng.permutation(items)
        successor[cycle] = np.roll(cycle, -1)          # each item's one successor, in its cluster

    rows = []
    for _ in range(n_users):
        liked = rng.choice(n_clusters, size=min(n_clusters, int(rng.integers(1, 3))), replace=False)
        pool = np.concatenate([members[c] for c in liked])
        length = int(rng.integers(min_len, max_len + 1))
        seq, seen = [], set()
        while len(seq) < length:
            nxt = int(successor[seq[-1]]) if seq and rng.random() < p_next else 0
            if nxt == 0 or nxt in seen:
                fresh = [i for i in pool if i not in seen] or [i for i in range(1, n_items + 1) if i not in seen]
                if not fresh:
                    break
                p = weight[fresh] / weight[fresh].sum()
                nxt = int(rng.choice(fresh, p=p))
            seq.append(nxt)
            seen.add(nxt)
        rows.append(seq)

    item_text = [""]
    used = set()
    for item in range(1, n_items + 1):
        words = SEQ_CLUSTERS[names[cluster_of[item]]].split()
        while True:
            a, b = rng.choice(len(words), size=2, replace=False)
            title = _title([words[a], words[b], str(rng.choice(SEQ_NOUNS))])
            if title not in used or len(used) > 10 * n_items:
                break
        used.add(title)
        item_text.append(title)
    offsets, items = to_ragged(rows)
    lengths = np.diff(offsets)
    stats = {"users": n_users, "items": n_items, "interactions": int(len(items)),
             "mean_seq_len": round(float(lengths.mean()), 3), "median_seq_len": float(np.median(lengths)),
             "max_seq_len": int(lengths.max()), "min_seq_len": int(lengths.min()),
             "clusters": n_clusters, "p_next": p_next, "seed": seed}
    return SequenceData(name, n_items, offsets, items, item_text=item_text,
                        raw_item_ids=["<pad>", *range(1, n_items + 1)], stats=stats)


def generate_news(n_news: int = 1500, n_users: int = 400, n_train: int = 3000, n_test: int = 800,
                  seed: int = 0, name: str = "synthetic_mind", cold_start: bool = False) -> NewsData:
    """Generated titles of ten topics, read by simulated users (``simulated_news``)."""
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    vocab = [TOPICS[t].split() for t in topics]
    topic_of = rng.integers(0, len(topics), size=n_news + 2)
    topic_of[:2] = -1                                  # pad, unknown
    titles, categories = ["", ""], ["", ""]
    for idx in range(2, n_news + 2):
        length = int(rng.integers(6, 15))
        n_topic = max(3, int(round(length * rng.uniform(0.5, 0.7))))
        words = list(rng.choice(vocab[topic_of[idx]], size=n_topic, replace=False))
        words += list(rng.choice(COMMON_WORDS, size=length - n_topic))
        titles.append(_title([str(w) for w in rng.permutation(words)]))
        categories.append(topics[topic_of[idx]])
    table = NewsTable(["<pad>", "<unknown>", *[f"N{i}" for i in range(1, n_news + 1)]], titles, categories,
                      topic_of.astype(np.int64))
    # ten topics of equal expected size: news are drawn uniformly (the data as first generated)
    return simulate_readers(name, table, rng, n_users=n_users, n_train=n_train, n_test=n_test,
                            cold_start=cold_start, balanced=False, extra_stats={"topics": len(topics), "seed": seed})


def source_files(name: str, data_dir) -> list:
    return []


def build(name: str, data_dir, download: bool):
    if name == "synthetic_seq":
        return generate_sequences()
    if name in ("synthetic_mind", "synthetic_mind_cold"):
        return generate_news(name=name, cold_start=name == "synthetic_mind_cold")
    raise ValueError(f"synthetic adapter serves 'synthetic_seq', 'synthetic_mind' and 'synthetic_mind_cold', "
                     f"not {name!r}")
