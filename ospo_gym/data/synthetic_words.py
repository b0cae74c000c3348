"""The words a synthetic catalog is made of, per locale, and the draw of one catalog's vocabulary from them.

Product types come in complementary pairs (the Complement label), attribute values are colours, materials and
generated pseudo-brands, and filler sentences give descriptions a realistic spread of common and rare words.
Brands are drawn so that none collides with another word of the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ospo_gym.data.synthetic_catalog import CatalogConfig

__all__ = [
    "BRAND_CODAS",
    "BRAND_ONSETS",
    "BRAND_VOWELS",
    "COLORS",
    "DESCRIPTORS",
    "FIELD_LABELS",
    "FILLERS",
    "MATERIALS",
    "TYPE_PAIRS",
    "CatalogVocabulary",
    "build_vocabulary",
    "complement_map",
]

# Product types come in complementary pairs (index 2i <-> 2i + 1); per locale, the same order.
TYPE_PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "us": (
        ("running shoes", "athletic socks"),
        ("wireless earbuds", "charging case"),
        ("yoga mat", "yoga block"),
        ("phone case", "screen protector"),
        ("laptop backpack", "laptop stand"),
        ("coffee mug", "coffee grinder"),
        ("desk lamp", "led bulb"),
        ("gaming mouse", "mouse pad"),
        ("mechanical keyboard", "wrist rest"),
        ("water bottle", "bottle brush"),
        ("winter jacket", "knit beanie"),
        ("rain boots", "boot liners"),
        ("camping tent", "sleeping bag"),
        ("frying pan", "spatula set"),
        ("chef knife", "cutting board"),
        ("dog leash", "dog collar"),
        ("bath towel", "towel rack"),
        ("travel pillow", "eye mask"),
        ("bluetooth speaker", "audio cable"),
        ("office chair", "seat cushion"),
    ),
    "es": (
        ("zapatillas de correr", "calcetines deportivos"),
        ("auriculares inalámbricos", "estuche de carga"),
        ("esterilla de yoga", "bloque de yoga"),
        ("funda de móvil", "protector de pantalla"),
        ("mochila para portátil", "soporte para portátil"),
        ("taza de café", "molinillo de café"),
        ("lámpara de escritorio", "bombilla led"),
        ("ratón gaming", "alfombrilla de ratón"),
        ("teclado mecánico", "reposamuñecas ergonómico"),
        ("botella de agua", "cepillo para botellas"),
        ("chaqueta de invierno", "gorro de punto"),
        ("botas de lluvia", "plantillas para botas"),
        ("tienda de campaña", "saco de dormir"),
        ("sartén antiadherente", "juego de espátulas"),
        ("cuchillo de chef", "tabla de cortar"),
        ("correa para perro", "collar para perro"),
        ("toalla de baño", "toallero de pared"),
        ("almohada de viaje", "antifaz para dormir"),
        ("altavoz bluetooth", "cable de audio"),
        ("silla de oficina", "cojín de asiento"),
    ),
    "jp": (
        ("ランニング シューズ", "スポーツ ソックス"),
        ("ワイヤレス イヤホン", "充電 ケース"),
        ("ヨガ マット", "ヨガ ブロック"),
        ("スマホ ケース", "画面 保護フィルム"),
        ("ノートパソコン リュック", "ノートパソコン スタンド"),
        ("コーヒー マグカップ", "コーヒー ミル"),
        ("デスク ライト", "led 電球"),
        ("ゲーミング マウス", "マウス パッド"),
        ("メカニカル キーボード", "リスト レスト"),
        ("水筒 ボトル", "ボトル ブラシ"),
        ("冬用 ジャケット", "ニット 帽"),
        ("レイン ブーツ", "ブーツ インソール"),
        ("キャンプ テント", "寝袋 シュラフ"),
        ("フライパン 深型", "フライ 返し"),
        ("包丁 三徳", "まな板 抗菌"),
        ("犬用 リード", "犬用 首輪"),
        ("バス タオル", "タオル ハンガー"),
        ("トラベル ピロー", "アイ マスク"),
        ("bluetooth スピーカー", "オーディオ ケーブル"),
        ("オフィス チェア", "シート クッション"),
    ),
}
COLORS: dict[str, tuple[str, ...]] = {
    "us": (
        "red", "blue", "black", "white", "green", "pink", "grey", "yellow",
        "orange", "purple", "brown", "beige", "silver", "gold", "teal", "maroon",
    ),
    "es": (
        "rojo", "azul", "negro", "blanco", "verde", "rosa", "gris", "amarillo",
        "naranja", "morado", "marrón", "beige", "plateado", "dorado", "turquesa", "granate",
    ),
    "jp": (
        "赤", "青", "黒", "白", "緑", "ピンク", "グレー", "黄色",
        "オレンジ", "紫", "茶色", "ベージュ", "シルバー", "ゴールド", "ターコイズ", "ワインレッド",
    ),
}
MATERIALS: dict[str, tuple[str, ...]] = {
    "us": (
        "leather", "cotton", "wool", "bamboo", "steel", "silicone", "nylon", "canvas",
        "plastic", "glass", "wood", "ceramic", "polyester", "aluminum", "rubber", "linen",
    ),
    "es": (
        "cuero", "algodón", "lana", "bambú", "acero", "silicona", "nailon", "lona",
        "plástico", "vidrio", "madera", "cerámica", "poliéster", "aluminio", "caucho", "lino",
    ),
    "jp": (
        "革", "綿", "ウール", "竹", "ステンレス", "シリコン", "ナイロン", "キャンバス",
        "プラスチック", "ガラス", "木製", "セラミック", "ポリエステル", "アルミ", "ゴム", "リネン",
    ),
}
DESCRIPTORS: dict[str, tuple[str, ...]] = {
    "us": ("pro", "plus", "lite", "max", "classic", "premium", "compact", "deluxe", "sport", "ultra", "mini", "original"),
    "es": ("pro", "plus", "lite", "max", "clásico", "premium", "compacto", "deluxe", "sport", "ultra", "mini", "original"),
    "jp": ("プロ", "プラス", "ライト", "マックス", "クラシック", "プレミアム", "コンパクト", "デラックス", "スポーツ", "ウルトラ", "ミニ", "オリジナル"),
}
# Filler sentences give descriptions and bullets a realistic spread of common and rare words.
FILLERS: dict[str, tuple[str, ...]] = {
    "us": (
        "perfect for everyday use at home or on the go",
        "easy to clean and built to last",
        "lightweight design that travels well",
        "backed by a one year manufacturer warranty",
        "makes a thoughtful gift for friends and family",
        "ergonomic shape for all day comfort",
        "tested for durability under demanding conditions",
        "ships in recyclable packaging",
        "sleek modern look that matches any style",
        "water resistant finish protects against spills",
        "reinforced stitching and sturdy construction",
        "fits most standard sizes",
        "trusted by thousands of happy customers",
        "great value for the price",
        "designed by our team in california",
        "hand wash recommended to keep it looking new",
        "includes a quick start guide",
        "non slip base keeps it steady",
        "breathable and comfortable in warm weather",
        "compatible with most popular accessories",
    ),
    "es": (
        "perfecto para el uso diario en casa o de viaje",
        "fácil de limpiar y hecho para durar",
        "diseño ligero ideal para viajar",
        "garantía del fabricante de un año",
        "un regalo ideal para amigos y familia",
        "forma ergonómica para mayor comodidad",
        "envío en embalaje reciclable",
        "acabado resistente al agua",
    ),
    "jp": (
        "毎日の使用に最適です",
        "お手入れが簡単で長持ちします",
        "軽量で持ち運びに便利",
        "メーカー保証一年付き",
        "プレゼントにも最適",
        "人間工学に基づいたデザイン",
        "リサイクル可能な梱包で発送",
        "防水加工で汚れに強い",
    ),
}
# Field names used in the bullet points ("Material: leather").
FIELD_LABELS: dict[str, dict[str, str]] = {
    "us": {"brand": "Brand", "color": "Colour", "material": "Material", "made": "made of", "by": "by"},
    "es": {"brand": "Marca", "color": "Color", "material": "Material", "made": "hecho de", "by": "de"},
    "jp": {"brand": "ブランド", "color": "カラー", "material": "素材", "made": "素材", "by": "ブランド"},
}
BRAND_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cr", "gl", "tr", "qu", "x")
BRAND_VOWELS = ("a", "e", "i", "o", "u", "ia", "eo")
BRAND_CODAS = ("", "", "", "n", "r", "x", "s", "k")


@dataclass(frozen=True)
class CatalogVocabulary:
    """The words a catalog is made of; attribute values are indices into these tuples.

    Attributes:
        types: product types; ``complements[i]`` lists the indices of the types complementary to ``types[i]``.
        complements: per type, a tuple of complementary type indices (empty when its partner is unused).
        brands, colors, materials, descriptors: attribute words.
    """

    types: tuple[str, ...]
    complements: tuple[tuple[int, ...], ...]
    brands: tuple[str, ...]
    colors: tuple[str, ...]
    materials: tuple[str, ...]
    descriptors: tuple[str, ...]

    def attribute_words(self, attribute: str) -> tuple[str, ...]:
        """The value words of ``attribute`` ("brand", "color" or "material")."""
        return {"brand": self.brands, "color": self.colors, "material": self.materials}[attribute]


def complement_map(locale: str = "us") -> dict[str, tuple[str, ...]]:
    """Every product type of ``locale`` mapped to its complementary types (both directions)."""
    out: dict[str, tuple[str, ...]] = {}
    for a, b in TYPE_PAIRS[locale]:
        out[a] = (b,)
        out[b] = (a,)
    return out


def _brand_names(count: int, rng: np.random.Generator, forbidden: set[str]) -> tuple[str, ...]:
    """``count`` distinct pronounceable pseudo-brands (2-3 syllables, ASCII), none in ``forbidden``."""
    names: list[str] = []
    seen = set(forbidden)
    # Rejection keeps names distinct; the syllable space (~10^6 names) makes collisions rare.
    while len(names) < count:
        batch = count - len(names)
        n_syll = rng.integers(2, 4, size=batch)
        onsets = rng.integers(len(BRAND_ONSETS), size=(batch, 3))
        vowels = rng.integers(len(BRAND_VOWELS), size=(batch, 3))
        codas = rng.integers(len(BRAND_CODAS), size=batch)
        for i in range(batch):
            word = "".join(BRAND_ONSETS[onsets[i, j]] + BRAND_VOWELS[vowels[i, j]] for j in range(n_syll[i]))
            word += BRAND_CODAS[codas[i]]
            if word not in seen:
                seen.add(word)
                names.append(word)
    return tuple(names)


def build_vocabulary(config: CatalogConfig, rng: np.random.Generator) -> CatalogVocabulary:
    """Draw the types (as complementary pairs), brands, colours and materials of a catalog."""
    pairs = TYPE_PAIRS[config.locale]
    chosen_pairs = rng.permutation(len(pairs))[: (config.num_types + 1) // 2]
    types = [t for p in chosen_pairs for t in pairs[p]][: config.num_types]
    index = {t: i for i, t in enumerate(types)}
    comp = complement_map(config.locale)
    complements = tuple(tuple(index[c] for c in comp[t] if c in index) for t in types)
    colors = tuple(COLORS[config.locale][i] for i in np.sort(rng.permutation(len(COLORS[config.locale]))[: config.num_colors]))
    materials = tuple(
        MATERIALS[config.locale][i] for i in np.sort(rng.permutation(len(MATERIALS[config.locale]))[: config.num_materials])
    )
    forbidden = {w for phrase in types for w in phrase.split()} | set(colors) | set(materials)
    # Brands must not collide with any other word of the catalog, or a brand query would match filler text.
    forbidden |= set(DESCRIPTORS[config.locale])
    forbidden |= {w for sentence in FILLERS[config.locale] for w in sentence.split()}
    forbidden |= {w.lower() for label in FIELD_LABELS[config.locale].values() for w in label.split()}
    brands = _brand_names(config.num_brands, rng, forbidden)
    return CatalogVocabulary(
        types=tuple(types),
        complements=complements,
        brands=brands,
        colors=colors,
        materials=materials,
        descriptors=DESCRIPTORS[config.locale],
    )

