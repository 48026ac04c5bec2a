"""Hypothesis strategies for realistic Italian ORU^R01 messages: the oracle of issue 13.

:func:`messages` builds one HL7 v2.3-v2.8 ORU^R01 of one of the five document
types (LAB, RAD, RSA, RAP, LDO) the way Italian LIS/RIS/clinic systems send
them, fitted to the checkout's default mappings (routing.toml, sections.csv,
facilities.csv, practitioners.csv, local_loinc.csv, units.csv, specimens.csv).
Every message it makes carries what its type needs, so the product must turn
each into a valid CDA and a signed PDF.

The dialect features are switchable (:class:`Dimensions`), so a shape the
product does not handle yet can be left out of CI and reported by the bench;
each :class:`Generated` lists the features it actually uses.

Texts are drawn from a seed (a few bytes of Hypothesis data make pages of
text), their structure (lines, blank lines, escapes, highlights) by Hypothesis.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import random
import unicodedata
from dataclasses import dataclass, field

from hypothesis import strategies as st
from stdnum.it import codicefiscale

TYPES = ("LAB", "RAD", "RSA", "RAP", "LDO")
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8")
# MSH-18 → the bytes' codec; no MSH-18 is ISO-8859-1 (the service's default_charset).
CHARSETS = {"8859/1": "iso-8859-1", "UNICODE UTF-8": "utf-8", "": "iso-8859-1"}
CF_ROOT = "MEF&2.16.840.1.113883.2.9.4.3.2&ISO"

# Sending facility per type (facilities.csv; the dialect corpus's README).
FACILITY = {"LAB": ("LIS", "LABPRIV"), "RAD": ("RIS", "CDC-FI"), "RSA": ("AMBU", "CDC-FI"),
            "RAP": ("APSYS", "CDC-FI"), "LDO": ("ADT-DIM", "CASACURA")}

FAMILIES = ("Rossi", "Bianchi", "Esposito", "Colombo", "Ricci", "Marino", "Greco", "Conti", "De Luca",
            "Giordano", "Mancini", "Lombardi", "Moretti", "D'Arco", "Dell'Acqua", "Nicolò", "Cinà",
            "Pirrò", "Santoro", "Lo Bianco", "Caruso", "Fabbri", "Gentile", "Benedetti")
GIVEN_M = ("Niccolò", "Tommaso", "Giosuè", "Noè", "Andrea", "Mattia", "Lorenzo", "Ercole", "Luca",
           "Gian Marco", "Raffaele")
GIVEN_F = ("Zoè", "Ilaria", "Lucrezia", "Aurora", "Francesca", "Maria Grazia", "Anna", "Noemi",
           "Giulia", "Benedetta")
# Foreigners' names in ISO-8859-1 letters.
FOREIGN_LATIN1 = (("Müller", "Jürgen"), ("García Núñez", "José"), ("Dupont", "Hélène"), ("Ørsted", "Søren"),
                  ("Ó Briain", "Siobhán"))
# Names in Latin letters beyond ISO-8859-1, as UTF-8 senders write the many residents born abroad
# (Romanian, Polish, Czech, Hungarian, Vietnamese, Turkish, Croatian, Albanian).
WIDE_NAMES = (("Ștefănescu", "Ioana"), ("Țurcanu", "Mihai"), ("Łukasiewicz", "Władysław"),
              ("Wiśniewska", "Małgorzata"), ("Dvořák", "Jiří"), ("Němcová", "Božena"), ("Szőke", "Zoltán"),
              ("Nguyễn", "Thị Hương"), ("Yılmaz", "Ayşe"), ("Kovačević", "Đurđa"), ("Çela", "Ëndri"))
# Real cadastral codes: Roma, Firenze, Pisa, Milano, Prato, Lucca, Arezzo, Napoli, Forlì.
MUNICIPALITIES = ("H501", "D612", "G702", "F205", "G999", "E715", "A390", "F839", "D704")
CITIES = ("Firenze", "Prato", "Pisa", "Lucca", "Arezzo", "Forlì", "Città di Castello", "Poggibonsi")

# practitioners.csv ids, and fictional specialists identified by their CF.
TABLE_DOCTORS = (("M001", "Rossi", "Mario"), ("M002", "Bianchi", "Laura"), ("M003", "Verdi", "Giuseppe"),
                 ("M004", "Ferrari", "Luca"), ("M005", "Costa", "Anna"), ("M006", "Galli", "Francesco"))

WORDS = ("paziente", "esame", "lesione", "reperto", "regolare", "nella norma", "si conferma", "quadro",
         "controllo", "terapia", "dolore", "addome", "torace", "città", "attività", "più", "perché",
         "già", "è", "dà", "così", "proiezioni", "parenchima", "ecostruttura", "omogenea", "milza",
         "fegato", "rene", "vie biliari", "colecisti", "linfonodi", "secondo", "pregresso", "°", "m²",
         "3,5 cm", "12 mm", "40%", "T2", "L4-L5", "l'esame", "dell'arto", "sinistro", "destro",
         "all'anamnesi", "riferita", "dispnea", "febbre", "ipertensione", "diabete", "follow-up",
         "PSA < 4 ng/mL", "> 10 cm", "<1 mm", "\"a vetro smerigliato\"", "Na+/K+")
# Sentences as Italian reports write them (ISO-8859-1 letters only).
PHRASES = (
    "Esame eseguito in due proiezioni.", "Non lesioni pleuro-parenchimali in atto.",
    "Seni costofrenici liberi. Ombra cardiaca nei limiti.", "Fegato di dimensioni nei limiti della norma, "
    "a margini regolari, con ecostruttura omogenea.", "Colecisti distesa, a pareti sottili, alitiasica.",
    "Vie biliari intra ed extraepatiche non dilatate.", "Reni in sede, di forma e dimensioni regolari.",
    "Non versamento libero in addome.", "Lordosi lombare conservata.",
    "Protrusione discale L4-L5 a larga base, senza significativa impronta sul sacco durale.",
    "Paziente vigile, orientato e collaborante.", "PA 135/85 mmHg, FC 72 bpm ritmica.",
    "Toni cardiaci validi, pause libere. Non soffi.", "Murmure vescicolare presente su tutto l'ambito.",
    "ECG: ritmo sinusale, non alterazioni della ripolarizzazione.", "Quadro clinico stabile.",
    "Proseguire la terapia in atto; controllo tra 12 mesi.", "Si consiglia controllo ecografico a 6 mesi.",
    "Mucosa antrale con infiltrato linfoplasmacellulare della lamina propria.",
    "Presenza di Helicobacter pylori.", "Margini di resezione indenni.",
    "Adenoma tubulare con displasia di basso grado.", "Tre frammenti di mucosa gastrica di 2-3 mm.",
    "Ricoverato per dispnea ingravescente ed edemi declivi.", "Apiressia dal 3° giorno di degenza.",
    "Avviata terapia diuretica e.v. con progressivo miglioramento clinico.",
    "Paziente in buone condizioni generali, apiretico, eupnoico.",
    "Controllo ematochimico tra 15 giorni presso il medico curante.",
    "Campione lievemente emolizzato.", "Si consiglia ripetizione del prelievo.",
    "Valore confermato su secondo campione.", "Dieta iposodica; evitare sforzi intensi.",
)
# Only in UTF-8 messages (not in ISO-8859-1).
UTF8_WORDS = ("dell’esame", "≥ 5 mm", "– quadro", "€ 36,15", "Ω", "“stabile”", "…")
# Characters that must travel escaped in HL7 text (\F\ \S\ \T\ \R\ \E\).
SPECIALS = ("|", "^", "&", "~", "\\")
_ESCAPE = {"\\": "\\E\\", "|": "\\F\\", "^": "\\S\\", "&": "\\T\\", "~": "\\R\\"}


@dataclass(frozen=True)
class Dimensions:
    """The shapes the generator may make; switch one off to keep it out of a run."""

    prt: bool = True
    """v2.7+: the interpreter (PRT PI) and the attending (PRT AT) in PRT instead of OBR-32 / PV1-7."""
    blank_lines: bool = True
    """An OBX with an empty OBX-5 between text lines (a paragraph break)."""
    escapes: bool = True
    """HL7 escapes in text: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh\\ \\.br\\ and \\H\\…\\N\\ in FT."""
    notes: bool = True
    """NTE after an OBR and after an OBX."""
    repetitions: bool = True
    """Text lines as OBX-5 repetitions, and a local patient id repeating PID-3."""
    several_orders: bool = True
    """More than one OBR group."""
    long_texts: bool = True
    """Texts up to many pages (otherwise a few lines)."""
    latin1: bool = True
    """MSH-18 8859/1 with ISO-8859-1 bytes (otherwise UNICODE UTF-8 only)."""
    coded: bool = True
    """Coded (CE/CWE ICD-9-CM) diagnoses besides the text."""
    spm: bool = True
    """LAB v2.5+: the specimen in an SPM segment instead of OBR-15."""
    statuses: bool = True
    """LAB: OBX-11 C (corrected, OBR-25 C), X (not obtainable, no value) and D (deleted) besides F."""
    long_tokens: bool = True
    """A note with a 300-400 character token without spaces (a PACS URL, its & sent as \\T\\)."""
    text_results: bool = True
    """LAB: ST results (Negativo, Assenti, ...) besides NM."""
    attachments: bool = True
    """An OBX ED with a Base64 PDF besides the text (never narrative; the ACK warns)."""
    fallback_sections: bool = True
    """RSA without a Referto OBX: its mapping fills Referto from the conclusions or the visit."""
    ris_codes: bool = True
    """RAD: OBX-3 as a RIS writes it, exam&GDT (description) / exam&IMP (impression), OBX-4 sub-IDs."""
    time_precision: bool = True
    """Times to the minute or with fractions of a second, not only YYYYMMDDHHMMSS."""
    structured_numeric: bool = True
    """LAB: SN results such as <^0.5 and >^200."""
    wide_names: bool = True
    """UTF-8 messages: the patient's name in Latin letters beyond ISO-8859-1 (Ștefănescu, Dvořák, Nguyễn)."""
    foreign_patient: bool = True
    """A patient without a CF: STP or ENI code (16 characters) in PID-3."""
    sparse: bool = True
    """Only what is needed: no ORC, no address or phone, no OBX-14, no PV1-19 (except a discharge letter)."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def without(self, *names: str) -> "Dimensions":
        return dataclasses.replace(self, **{n: False for n in names})


@dataclass
class Generated:
    """One generated message and what the test needs to know about it."""

    raw: bytes
    doc_type: str
    version: str
    charset: str
    family: str
    given: str
    fiscal_code: str
    """The patient's id in PID-3: a CF, or an STP/ENI code."""
    features: set[str] = field(default_factory=set)
    """The :class:`Dimensions` this message actually uses."""
    texts: list[str] = field(default_factory=list)
    """Decoded sentences of the report's narrative: each must be readable in the CDA."""
    absent: list[str] = field(default_factory=list)
    """What must not be narrative text of the CDA (an attachment's Base64)."""
    notices: set[tuple[str, str]] = field(default_factory=set)
    """The ERR the ACK must carry for what the document leaves out: (severity, location)."""

    def describe(self) -> str:
        return (f"{self.doc_type} v{self.version} {self.charset} {len(self.raw)} bytes, "
                f"features: {', '.join(sorted(self.features)) or 'none'}")


# ---------------------------------------------------------------------------
# Fiscal codes (codice fiscale) with a valid check character.


def _letters(name: str) -> str:
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return "".join(c for c in plain.upper() if c.isalpha())


def _code_part(name: str, *, given: bool) -> str:
    letters = _letters(name)
    consonants = [c for c in letters if c not in "AEIOU"]
    vowels = [c for c in letters if c in "AEIOU"]
    if given and len(consonants) >= 4:
        consonants = [consonants[0], consonants[2], consonants[3]]
    return "".join(consonants + vowels + ["X", "X", "X"])[:3]


def fiscal_code(family: str, given: str, birth: dt.date, female: bool, municipality: str) -> str:
    """The codice fiscale of a person (check character computed with python-stdnum)."""
    day = birth.day + (40 if female else 0)
    stem = (_code_part(family, given=False) + _code_part(given, given=True) + f"{birth.year % 100:02d}"
            + "ABCDEHLMPRST"[birth.month - 1] + f"{day:02d}" + municipality)
    return stem + codicefiscale.calc_check_digit(stem)


# ---------------------------------------------------------------------------
# Text: sentences from a seed, encoded with HL7 escapes.


def escape(text: str) -> str:
    """*text* as HL7 field content (the five delimiters escaped)."""
    return "".join(_ESCAPE.get(c, c) for c in text)


@dataclass
class Line:
    """One text line of an OBX (or NTE): sentences, joined by a space or \\.br\\."""

    sentences: list[str]
    breaks: int = 0               # 1: \.br\ between sentences; 2: \.br\\.br\ (an empty line too)
    highlight: bool = False       # \H\…\N\ around the first word (FT)
    hex_escape: bool = False      # one character as \Xhh\ (its bytes in the message's charset)
    codec: str = "utf-8"

    def encode(self) -> str:
        parts = []
        for n, sentence in enumerate(self.sentences):
            encoded = escape(sentence)
            if self.hex_escape and n == 0:
                encoded = _hex_escaped(sentence, self.codec)
            if self.highlight and n == 0 and " " in sentence:
                head, tail = sentence.split(" ", 1)
                encoded = f"\\H\\{escape(head)}\\N\\ {escape(tail)}"
            parts.append(encoded)
        return ("\\.br\\" * self.breaks or " ").join(parts)


def _hex_escaped(sentence: str, codec: str) -> str:
    """*sentence* escaped, its first accented letter (else its first letter) as \\Xhh\\ of its bytes."""
    at = next((i for i, c in enumerate(sentence) if not c.isascii()), 0)
    char = sentence[at]
    try:
        data = char.encode(codec)
    except UnicodeEncodeError:
        return escape(sentence)
    return escape(sentence[:at]) + f"\\X{data.hex().upper()}\\" + escape(sentence[at + 1:])


def _sentence(rnd: random.Random, words: int, specials: bool, utf8: bool = False) -> str:
    """A sentence: one a report would hold, or *words* words of the report's vocabulary."""
    if not specials and rnd.random() < 0.4:
        return rnd.choice(PHRASES)
    chosen = [rnd.choice(WORDS + UTF8_WORDS if utf8 else WORDS) for _ in range(words)]
    if specials:
        chosen.insert(rnd.randrange(len(chosen) + 1), rnd.choice(("A|B", "x^2", "R&D", "1~2", "C:\\ref")))
    text = " ".join(chosen)
    return text[0].upper() + text[1:] + "."


@st.composite
def lines(draw, rnd: random.Random, dims: Dimensions, used: set[str], *, ft: bool, long: bool, utf8: bool):
    """The text lines of one section; a long one may hold a paragraph taller than a page."""
    count = draw(st.integers(1, 40 if long else 3))
    tall = long and draw(st.booleans())
    out = []
    for k in range(count):
        n_sentences = 70 if tall and k == 0 else draw(st.integers(1, 8 if long else 3))
        escapes = dims.escapes and draw(st.booleans())
        sentences = [_sentence(rnd, rnd.randint(3, 25 if long else 10), escapes and draw(st.booleans()), utf8)
                     for _ in range(n_sentences)]
        line = Line(sentences,
                    breaks=draw(st.sampled_from((0, 1, 1, 2))) if escapes and n_sentences > 1 else 0,
                    highlight=escapes and ft and draw(st.booleans()),
                    hex_escape=escapes and draw(st.booleans()),
                    codec="utf-8" if utf8 else "iso-8859-1")
        if escapes and (line.breaks or line.highlight or line.hex_escape
                        or any(c in s for s in sentences for c in SPECIALS)):
            used.add("escapes")
        out.append(line)
    return out


# ---------------------------------------------------------------------------
# The message.


@dataclass
class Person:
    family: str
    given: str
    fiscal_code: str
    table_id: str = ""

    def xcn(self) -> str:
        """As an XCN (PV1-7, ORC-12, OBR-16, PRT-5)."""
        if self.table_id:
            return f"{self.table_id}^{escape(self.family)}^{escape(self.given)}^^^Dott.^^^^L^^^PRN"
        return f"{self.fiscal_code}^{escape(self.family)}^{escape(self.given)}^^^Dott.^^^{CF_ROOT}^L^^^NNITA"

    def ndl(self) -> str:
        """As OBR-32's name in subcomponents (id&family&given)."""
        return f"{self.table_id or self.fiscal_code}&{escape(self.family)}&{escape(self.given)}"


@st.composite
def people(draw, *, patient: bool = False):
    female = draw(st.booleans())
    family = draw(st.sampled_from(FAMILIES))
    given = draw(st.sampled_from(GIVEN_F if female else GIVEN_M))
    if draw(st.booleans()):       # many senders write names in capitals
        family, given = family.upper(), given.upper()
    birth = draw(st.dates(dt.date(1920, 1, 1), dt.date(2019, 12, 31) if patient else dt.date(1990, 12, 31)))
    cf = fiscal_code(family, given, birth, female, draw(st.sampled_from(MUNICIPALITIES)))
    return Person(family, given, cf), birth, female


@st.composite
def doctors(draw):
    if draw(st.booleans()):
        table_id, family, given = draw(st.sampled_from(TABLE_DOCTORS))
        return Person(family, given, "", table_id)
    person, _, _ = draw(people())
    return person


def _ts(when: dt.datetime, offset: bool, precision: str = "s") -> str:
    """An HL7 DTM to the minute ("m"), second ("s") or ten-thousandth of a second ("f")."""
    text = when.strftime({"m": "%Y%m%d%H%M", "s": "%Y%m%d%H%M%S", "f": "%Y%m%d%H%M%S.0000"}[precision])
    return text + ("+0100" if offset else "")


class _Builder:
    """Segments of one message, and what is known about them."""

    def __init__(self, version: str):
        self.version = version
        self.segments: list[str] = []
        self.texts: list[str] = []
        self.absent: list[str] = []
        self.notices: set[tuple[str, str]] = set()
        self.obx_count = 0
        self.status = "F"
        """OBX-11 (and OBR-25) of a narrative report: F, or C when it corrects an earlier one."""

    @property
    def v27(self) -> bool:
        return tuple(int(p) for p in self.version.split(".")) >= (2, 7)

    @property
    def coded_type(self) -> str:
        return "CWE" if tuple(int(p) for p in self.version.split(".")) >= (2, 6) else "CE"

    def add(self, *fields: str) -> None:
        self.segments.append("|".join(fields).rstrip("|") if fields[0] != "MSH" else "|".join(fields))

    def obx(self, n: int, value_type: str, code: str, value: str, *, unit: str = "", ref: str = "",
            flag: str = "", status: str = "", sub_id: str = "", when: str = "") -> int:
        """Add an OBX; its occurrence in the message (ERR-2 counts segments so)."""
        self.obx_count += 1
        self.add("OBX", str(n), value_type, code, sub_id, value, unit, ref, flag, "", "", status or self.status,
                 "", "", when)
        return self.obx_count


# Narrative sections per type: (OBX-3 local code, title, required). The
# required ones are those the type's schematron demands (mappings/<TYPE>.toml).
NARRATIVE = {
    "RAD": (("QUESITO", "Quesito diagnostico", False), ("STORIA", "Storia clinica", False),
            ("PRECEDENTI", "Precedenti esami", False), ("TECNICA", "Tecnica", False),
            ("REFERTO", "Referto", True), ("CONCLUSIONI", "Conclusioni", False),
            ("SUGGERIMENTI", "Suggerimenti", False)),
    "RSA": (("QUESITO", "Quesito diagnostico", False), ("ANAMNESI", "Anamnesi", False),
            ("EO", "Esame obiettivo", False), ("REFERTO", "Referto", True),
            ("CONCLUSIONI", "Conclusioni", False), ("SUGGERIMENTI", "Suggerimenti", False)),
    "RAP": (("NOTIZIE", "Notizie cliniche", False), ("MACRO", "Macroscopia", False),
            ("MICRO", "Microscopia", False), ("DIAGNOSI", "Diagnosi", True),
            ("ACCERTAMENTI", "Ulteriori accertamenti", False)),
    "LDO": (("MOTIVO", "Motivo del ricovero", True), ("ANAMNESI", "Anamnesi", False),
            ("ESAMI", "Esami eseguiti", False), ("DECORSO", "Decorso", True),
            ("CONSULENZA", "Consulenze", False), ("DIMISSIONE", "Condizioni alla dimissione", True),
            ("TERAPIA", "Terapia alla dimissione", False), ("FOLLOWUP", "Istruzioni", False)),
}
# Coded ICD-9-CM diagnoses: before the text of section → under this OBX-3 code (sections.csv).
CODED = {"RSA": {"CONCLUSIONI": "DIAG"}, "RAP": {"DIAGNOSI": "DIAGNOSI"},
         "LDO": {"MOTIVO": "MOTIVO", "DIMISSIONE": "DIMISSIONE"}}
# LOINC alternates some labs send in OBX-3.4-6.
LOINC = {"GLU": "2345-7", "CREA": "2160-0", "HGB": "718-7", "TSH": "3016-3", "PLT": "777-3"}
DIAGNOSES = (("486", "Polmonite, agente non specificato"), ("401.9", "Ipertensione essenziale non specificata"),
             ("428.0", "Insufficienza cardiaca congestizia"), ("493.90", "Asma, tipo non specificato"),
             ("535.10", "Gastrite atrofica senza emorragia"), ("211.3", "Tumori benigni del colon"),
             ("427.31", "Fibrillazione atriale"), ("585.3", "Malattia renale cronica stadio III"))
# OBR-4 (ICD-9-CM procedures present in the reference terminology) and OBR-24, per type.
ORDERS = {
    "RAD": ((("87.44", "RX TORACE 2 PROIEZIONI"), "RX"), (("88.76", "ECOGRAFIA ADDOME COMPLETO"), "US"),
            (("88.93", "RM RACHIDE LOMBOSACRALE"), "MR"), (("88.01", "TC ADDOME SUPERIORE"), "CT"),
            (("87.03", "TC CRANIO"), "CT"), (("88.72", "ECOCARDIOGRAFIA"), "US")),
    "RSA": ((("89.7", "VISITA GENERALE"), "PHY"), (("89.13", "VISITA NEUROLOGICA"), "OTH"),
            (("89.7", "VISITA CARDIOLOGICA"), "CAR"), (("89.52", "ELETTROCARDIOGRAMMA"), "CAR")),
}
# LAB orders: OBR-4, OBR-24, specimen (OBR-15 / SPM-4), results (OBX-3 local code, name, unit, range).
LAB_ORDERS = (
    ("GLU^Glucosio^LOCAL^2345-7^Glucosio^LN", "CH", "SER",
     (("GLU", "Glucosio", "mg/dl", 70, 110),)),
    ("CHIM^Chimica clinica^LOCAL", "CH", "SER",
     (("CREA", "Creatinina", "mg/dl", 0.6, 1.2), ("AZO", "Azotemia", "mg/dl", 10, 50),
      ("NA", "Sodio", "mmol/l", 135, 145), ("K", "Potassio", "mmol/l", 3.5, 5.1),
      ("COL", "Colesterolo totale", "mg/dl", 120, 200), ("AST", "AST (GOT)", "U/l", 5, 40))),
    ("EMOC^Emocromo^LOCAL", "HM", "BLD",
     (("HGB", "Emoglobina", "g/dl", 12, 17.5), ("WBC", "Leucociti", "x10^9/L", 4, 10),
      ("PLT", "Piastrine", "x10^9/L", 150, 400), ("HCT", "Ematocrito", "%", 36, 50))),
    ("COAG^Coagulazione^LOCAL", "COAG", "PLAS",
     (("PT", "Tempo di protrombina", "sec", 10, 13), ("INR", "INR", "ratio", 0.8, 1.2))),
    ("TIR^Funzionalità tiroidea^LOCAL", "IMM", "SER",
     (("TSH", "Tireotropina (TSH)", "mUI/L", 0.27, 4.2),)),
)


TEXT_RESULTS = (("UPRO", "Proteine urinarie", ("Assenti", "Tracce", "Presenti ++")),
                ("UCOL", "Colore", ("Giallo paglierino", "Ambrato")),
                ("UCULT", "Urinocoltura", ("Negativa", "Carica batterica < 1000 UFC/mL")))
# A small PDF as a RIS attaches the signed original (OBX-2 ED, OBX-5 ^application^pdf^Base64^…).
PDF_BYTES = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj 2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>"
             b"endobj 3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
PACS = "https://pacs.asl-toscana.example.it/viewer/index.html?studyUID=1.2.840.113619.2.55.3.604688119"


@st.composite
def _times(draw):
    base = draw(st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2026, 10, 31))).replace(microsecond=0)
    return base, base + dt.timedelta(hours=draw(st.integers(1, 72)))


@dataclass
class _Context:
    """What every part of one message shares while it is drawn."""

    b: _Builder
    rnd: random.Random
    dims: Dimensions
    used: set[str]
    utf8: bool
    placer: str
    accession: str
    observed: str
    reported: str
    referrer: Person
    interpreter: Person
    prt_roles: dict[str, str]
    """Field → PRT role the sender uses instead of it (OBR-32: PI, OBX-16: RO, ORC-12: OP)."""
    exam: str = ""
    """RAD: the RIS exam code that prefixes OBX-3 (ris_codes)."""
    obr32_id_only: bool = False
    """OBR-32 as the practitioners-table id alone (M001), as some v2.3 senders write it."""
    prt_n: int = 1

    def prt(self, role: str, label: str, person: Person, when: str = "") -> None:
        self.b.add("PRT", str(self.prt_n), "AD", "", f"{role}^{label}^HL70912", person.xcn(),
                   "", "", "", "", "", when)
        self.prt_n += 1

    def orc(self) -> None:
        if self.dims.sparse:
            return
        self.b.add("ORC", "RE", self.placer, self.accession, "", "CM", "", "", "", self.observed, "", "",
                   "" if "ORC-12" in self.prt_roles else self.referrer.xcn())

    def obr(self, k: int, obr4: str, section: str, *, specimen: str = "", status: str = "") -> None:
        """OBR (OBR-16, OBR-32 or their PRT) for group *k*; from the second, sometimes its own ORC."""
        b = self.b
        if k > 1 and self.rnd.random() < 0.5:
            self.orc()
        by_prt_16 = "ORC-12" in self.prt_roles
        b.add("OBR", str(k), self.placer, self.accession, obr4, "", "", self.observed, "", "", "", "", "", "",
              self.observed, specimen, "" if by_prt_16 else self.referrer.xcn(), "", "", "", "", "",
              self.reported, "", section, status or b.status, "", "", "", "", "", "", self.obr32())
        if by_prt_16:
            self.prt("OP", "Ordering Provider", self.referrer)
        if self.prt_roles.get("OBR-32") == "PI":
            self.prt("PI", "Primary Interpreter", self.interpreter, self.reported)

    def obr32(self) -> str:
        """The interpreter in OBR-32, unless a PRT names people."""
        if self.prt_roles:
            return ""
        if self.obr32_id_only and self.interpreter.table_id:
            return self.interpreter.table_id
        return self.interpreter.ndl()

    def attachment(self, n: int, carried: bool) -> None:
        """An OBX ED carrying a PDF: never narrative text; where the type has no place for it, a warning."""
        data = base64.b64encode(PDF_BYTES + self.rnd.randbytes(self.rnd.randint(200, 2000))).decode("ascii")
        occurrence = self.b.obx(n, "ED", "PDF^Referto firmato digitalmente^L", f"^application^pdf^Base64^{data}")
        if not carried:
            self.b.notices.add(("W", f"OBX^{occurrence}^5"))
        self.after_obx()
        self.b.absent.append(data[:60])
        self.used.add("attachments")

    def after_obx(self) -> None:
        if self.prt_roles.get("OBR-32") == "RO":
            self.prt("RO", "Responsible Observer", self.interpreter, self.reported)

    def note(self, *, sentences: int = 1, shown: bool = True) -> None:
        """An NTE: a comment, sometimes with a long unbroken token (*shown*: the document keeps it)."""
        text = [_sentence(self.rnd, self.rnd.randint(3, 15), self.dims.escapes and self.rnd.random() < 0.5,
                          self.utf8)
                for _ in range(sentences)]
        self.used.add("notes")
        if self.dims.escapes and any(c in t for t in text for c in SPECIALS):
            self.used.add("escapes")
        if self.dims.long_tokens and self.rnd.random() < 0.3:
            token = PACS + "&series=" + "".join(self.rnd.choice("0123456789.") for _ in range(
                self.rnd.randint(200, 300)))
            text.append(token)
            self.used.add("long_tokens")
        # A comment of several NTE, one per line; an empty NTE between paragraphs.
        segments = [Line(text, codec="utf-8" if self.utf8 else "iso-8859-1")]
        if self.rnd.random() < 0.3:
            more = [_sentence(self.rnd, self.rnd.randint(3, 12), False, self.utf8)]
            if self.dims.blank_lines and self.rnd.random() < 0.5:
                segments.append(Line([]))
                self.used.add("blank_lines")
            segments.append(Line(more))
        for n, line in enumerate(segments, start=1):
            self.b.add("NTE", str(n), "L", line.encode())
            if shown:
                self.b.texts.extend(line.sentences)


def _note_maybe(draw, ctx: _Context, odds: int) -> None:
    if ctx.dims.notes and draw(st.integers(0, odds)) == 0:
        ctx.note()


@st.composite
def _narrative(draw, ctx: _Context, doc_type: str):
    """The OBX of a narrative type: each section's lines, one OBX per line, repeated in OBX-5, or FT."""
    b, dims, used = ctx.b, ctx.dims, ctx.used
    long = dims.long_texts and draw(st.booleans())
    sections = list(NARRATIVE[doc_type])
    if doc_type == "RSA" and dims.fallback_sections:
        # No Referto OBX: the mapping fills it from the conclusions, else from the whole visit.
        sections = [(c, t, c == "CONCLUSIONI" or r) for c, t, r in sections if c != "REFERTO"]
        used.add("fallback_sections")
    ris = doc_type == "RAD" and dims.ris_codes
    if ris:
        used.add("ris_codes")
    n = 0
    for code, title, required in sections:
        if not required and not draw(st.booleans()):
            continue
        coded_as = CODED.get(doc_type, {}).get(code)
        if dims.coded and coded_as and draw(st.booleans()):
            diag_code, diag_text = draw(st.sampled_from(DIAGNOSES))
            n += 1
            b.obx(n, b.coded_type, f"{coded_as}^Diagnosi^L", f"{diag_code}^{escape(diag_text)}^I9CM")
            ctx.after_obx()
            used.add("coded")
        ft = draw(st.booleans())
        section_long = long and draw(st.booleans())
        if section_long:
            used.add("long_texts")
        text_lines = draw(lines(ctx.rnd, dims, used, ft=ft, long=section_long, utf8=ctx.utf8))
        style = draw(st.sampled_from(("one OBX", "per line", "repeated")))
        if style == "repeated" and not (dims.repetitions and not ft and len(text_lines) > 1):
            style = "per line"
        if style == "one OBX" and not (ft and dims.escapes):     # lines joined by \.br\
            style = "per line"
        obx3 = f"{code}^{escape(title)}^L"
        sub_id = ""
        if ris and code in ("REFERTO", "CONCLUSIONI"):
            # RIS style: exam code & description (GDT) or impression (IMP), sub-ID 1 or 2.
            obx3 = f"{ctx.exam}&{'GDT' if code == 'REFERTO' else 'IMP'}^{escape(title)}^L"
            sub_id = "1" if code == "REFERTO" else "2"
        if style == "repeated":
            used.add("repetitions")
            n += 1
            b.obx(n, "TX", obx3, "~".join(line.encode() for line in text_lines), sub_id=sub_id)
            ctx.after_obx()
        elif style == "one OBX":
            n += 1
            b.obx(n, "FT", obx3, "\\.br\\".join(line.encode() for line in text_lines), sub_id=sub_id)
            ctx.after_obx()
            if len(text_lines) > 1:
                used.add("escapes")
        else:
            for k, line in enumerate(text_lines):
                if k and dims.blank_lines and draw(st.booleans()):
                    n += 1
                    b.obx(n, "TX", obx3, draw(st.sampled_from(("", " "))), sub_id=sub_id)
                    ctx.after_obx()
                    used.add("blank_lines")
                n += 1
                b.obx(n, "FT" if ft else "TX", obx3, line.encode(), sub_id=sub_id)
                ctx.after_obx()
        for line in text_lines:
            b.texts.extend(line.sentences)
        _note_maybe(draw, ctx, 5)
    if dims.attachments and draw(st.booleans()):
        ctx.attachment(n + 1, carried=False)     # RAP carries one only in Macro/Microscopia/Analisi


def _value(rnd: random.Random, low: float, high: float) -> tuple[str, str]:
    """A result value and its flag (N/L/H), written as Italian labs do (decimal comma or point)."""
    value = round(rnd.uniform(low * 0.6, high * 1.4), 1 if high < 20 else 0)
    flag = "L" if value < low else "H" if value > high else "N"
    text = f"{value:g}"
    return (text.replace(".", ",") if rnd.random() < 0.3 else text), flag


@st.composite
def _lab(draw, ctx: _Context):
    """One to four OBR groups of results (NM, ST), with their specimen in OBR-15 or SPM."""
    b, dims, used, rnd = ctx.b, ctx.dims, ctx.used, ctx.rnd
    count = draw(st.integers(1, 4)) if dims.several_orders else 1
    if count > 1:
        used.add("several_orders")
    orders = list(draw(st.lists(st.sampled_from(LAB_ORDERS), min_size=count, max_size=count, unique=True)))
    if dims.text_results and draw(st.booleans()):
        orders.append(("URINE^Esame urine^LOCAL", "URN", "UR", None))
        used.add("text_results")
    if dims.long_texts and draw(st.integers(0, 3)) == 0:
        # A long panel under local codes the mappings do not know (no LOINC: a W003 warning only).
        size = draw(st.integers(20, 80))
        orders.append(("PAN^Pannello esteso^LOCAL", "CH", "SER",
                       tuple((f"P{i:03d}", f"Analita {i} (metodo {rnd.choice(WORDS)})", "mg/dl", 1.0, 9.5)
                             for i in range(1, size + 1))))
        used.add("long_texts")
    spm = dims.spm and b.version not in ("2.3", "2.3.1", "2.4") and draw(st.booleans())
    if spm:
        used.add("spm")
    for k, (obr4, section, specimen, tests) in enumerate(orders, start=1):
        rows = []
        for code, name, *rest in (tests or TEXT_RESULTS):
            status = draw(st.sampled_from("FFFFCXD")) if dims.statuses else "F"
            rows.append((code, name, rest, status))
        if not any(status in "FC" for *_, status in rows):
            rows[0] = rows[0][:3] + ("F",)
        if any(status != "F" for *_, status in rows):
            used.add("statuses")
        ctx.obr(k, obr4, section, specimen="" if spm else f"{specimen}^{specimen}",
                status="C" if any(status == "C" for *_, status in rows) else "F")
        _note_maybe(draw, ctx, 3)
        for n, (code, name, rest, status) in enumerate(rows, start=1):
            obx3 = f"{code}^{escape(name)}^LOCAL"
            if code in LOINC and draw(st.booleans()):
                obx3 += f"^{LOINC[code]}^{escape(name)}^LN"
            if tests is None:
                value_type, value, unit, ref, flag = "ST", escape(rnd.choice(rest[0])), "", "", ""
            else:
                unit, low, high = rest
                value, flag = _value(rnd, low, high)
                value_type, unit, ref = "NM", escape(unit), f"{low:g}-{high:g}"
                if dims.structured_numeric and draw(st.integers(0, 3)) == 0:
                    value_type, value, flag = "SN", draw(st.sampled_from((f"<^{low:g}", f">^{high:g}"))), ""
                    used.add("structured_numeric")
            if status == "X":
                value, flag = "", ""
            occurrence = b.obx(n, value_type, obx3, value, unit=unit, ref=ref, flag=flag, status=status,
                               when="" if dims.sparse else ctx.observed)
            if status == "D":
                b.notices.add(("I", f"OBX^{occurrence}^11"))
            ctx.after_obx()
            if status != "D":
                b.texts.append(name)
            if status in "CXD" and dims.notes:
                ctx.note(shown=status != "D")     # a deleted result leaves with its comment
            else:
                _note_maybe(draw, ctx, 6)
        if dims.attachments and k == len(orders) and draw(st.booleans()):
            ctx.attachment(len(rows) + 1, carried=True)     # the LAB guide's observationMedia
        if spm:
            b.add("SPM", "1", f"^{ctx.accession}-{k}", "", f"{specimen}^{specimen}^HL70487", "", "", "", "", "",
                  "", "", "", "", "", "", "", ctx.observed)


def _prt_roles(draw, dims: Dimensions, v27: bool, doc_type: str, used: set[str]) -> dict[str, str]:
    """Which people a v2.7+ sender names in PRT instead of OBR-32 (PI, or RO after each OBX), ORC-12, PV1-7."""
    if not (dims.prt and v27 and draw(st.booleans())):
        return {}
    used.add("prt")
    roles = {"OBR-32": draw(st.sampled_from(("PI", "RO") if doc_type == "LAB" else ("PI",)))}
    if draw(st.booleans()):
        roles["ORC-12"] = "OP"
    if draw(st.booleans()):
        roles["PV1-7"] = "AT"
    return roles


@st.composite
def _patient(draw, ctx: _Context, patient: Person, birth: dt.date, female: bool, facility: str):
    """PID: the patient's ids (CF, STP/ENI, a local number), names, birth, sex, address and phones."""
    dims, used, rnd = ctx.dims, ctx.used, ctx.rnd
    if dims.wide_names and ctx.utf8 and draw(st.booleans()):
        # Born abroad (cadastral code Z…): a CF of their own, or an STP/ENI code below.
        patient.family, patient.given = draw(st.sampled_from(WIDE_NAMES))
        patient.fiscal_code = fiscal_code(patient.family, patient.given, birth, female,
                                          draw(st.sampled_from(("Z129", "Z127", "Z156", "Z251", "Z243"))))
        used.add("wide_names")
    pid3 = f"{patient.fiscal_code}^^^{draw(st.sampled_from((CF_ROOT, 'MEF')))}^NNITA"
    if dims.foreign_patient and draw(st.booleans()):
        # A foreigner without a CF: STP (temporarily present) or ENI (EU, not registered), 16 characters.
        kind = draw(st.sampled_from(("STP", "ENI")))
        patient.fiscal_code = f"{kind}090201{draw(st.integers(0, 9999999)):07d}"
        pid3 = f"{patient.fiscal_code}^^^{kind}^{kind}"
        if "wide_names" not in used:
            patient.family, patient.given = draw(st.sampled_from(FOREIGN_LATIN1))
        used.add("foreign_patient")
    name = f"{escape(patient.family)}^{escape(patient.given)}^^^^^L"
    street = escape("Via " + rnd.choice(("Roma", "Garibaldi", "dell'Agnolo", "Niccolò Tommaseo")))
    address = f"{street} {rnd.randint(1, 200)}^^{escape(draw(st.sampled_from(CITIES)))}^^50100^IT^H"
    phones = "^PRN^PH^^^055^" + str(rnd.randint(200000, 9999999))
    if dims.repetitions and draw(st.booleans()):
        # The CF not always first; an alias name after the legal one; a mobile after the home phone.
        local = f"{draw(st.integers(1000, 999999))}^^^{facility}^PI"
        pid3 = f"{local}~{pid3}" if draw(st.booleans()) else f"{pid3}~{local}"
        name += f"~{escape(patient.family.upper())}^{escape(patient.given.upper())}^^^^^A"
        phones += f"~^PRN^CP^^^^^^^^^3{rnd.randint(100000000, 999999999)}"
        used.add("repetitions")
    if dims.sparse:
        address = phones = ""
    ctx.b.add("PID", "1", "", pid3, "", name, "", birth.strftime("%Y%m%d"), "F" if female else "M", "", "",
              address, "", phones)


@st.composite
def _visit(draw, ctx: _Context, attending: Person, facility: str, inpatient: bool, stay: tuple[str, str]):
    """PV1 (and PRT AT): outpatient, or the inpatient stay of a discharge letter (PV1-44, PV1-45)."""
    by_prt = "PV1-7" in ctx.prt_roles
    # Outpatient or emergency (PV1-2 E: a direct-access service); the NHS pays, or the patient (PV1-20 P).
    patient_class = "I" if inpatient else draw(st.sampled_from("OOE"))
    pv1 = ["PV1", "1", patient_class, f"{'MED^12^3' if inpatient else 'AMB'}^^^{facility}", "", "",
           "", "" if by_prt else attending.xcn()] + [""] * 11 + [
        "" if ctx.dims.sparse and not inpatient else f"V26-{draw(st.integers(1, 99999)):05d}",
        draw(st.sampled_from(("SSN", "SSN", "P")))]
    if inpatient:
        pv1 += [""] * (44 - len(pv1)) + list(stay)
    ctx.b.add(*pv1)
    if by_prt:
        ctx.prt("AT", "Attending Provider", attending)


@st.composite
def _narrative_report(draw, ctx: _Context, doc_type: str):
    """The OBR groups of a narrative type (several exams for RAD and RSA), then its sections."""
    if ctx.dims.statuses and draw(st.booleans()):
        ctx.b.status = "C"          # the corrected version of a report sent before
        ctx.used.add("statuses")
    if doc_type == "LDO":
        orders = [("34105-7^Lettera di dimissione ospedaliera^LN", "LDO")]
    elif doc_type == "RAP":
        orders = [("AP01^ESAME ISTOLOGICO^L", "SP")]
    else:
        count = draw(st.integers(1, 3)) if ctx.dims.several_orders else 1
        picked = draw(st.lists(st.sampled_from(ORDERS[doc_type]), min_size=count, max_size=count,
                               unique_by=lambda o: o[0][1]))
        orders = [(f"{code}^{escape(name)}^I9CM", section) for (code, name), section in picked]
        ctx.exam = f"RX{picked[0][0][0].replace('.', '')}"
        if count > 1:
            ctx.used.add("several_orders")
    for k, (obr4, section) in enumerate(orders, start=1):
        ctx.obr(k, obr4, section)
        if k == 1:
            _note_maybe(draw, ctx, 3)
    draw(_narrative(ctx, doc_type))
    if doc_type == "RAP" and ctx.dims.spm and ctx.b.version not in ("2.3", "2.3.1", "2.4"):
        draw(_pathology_specimens(ctx))


# Pathology specimens: SPM-8 site (SNOMED CT), SPM-14 description.
RAP_SITES = (("60184004", "Colon sigmoideo"), ("485005", "Colon trasverso"), ("69695003", "Mucosa gastrica"),
             ("76752008", "Mammella"), ("39607008", "Polmone"))


@st.composite
def _pathology_specimens(draw, ctx: _Context):
    """One SPM per specimen after the OBX (the v2.5 SPECIMEN group), each described in Procedura."""
    for n in range(1, draw(st.integers(1, 3)) + 1):
        code, site = draw(st.sampled_from(RAP_SITES))
        description = f"{chr(64 + n)}) Prelievo bioptico, {site.lower()}, {draw(st.integers(2, 25))} mm"
        ctx.b.add("SPM", str(n), f"^{ctx.accession}-{chr(64 + n)}", "", "TISS^Tessuto^HL70487", "", "",
                  "BIOPSIA^Biopsia^L", f"{code}^{escape(site)}^SCT", "", "", "", "", "", escape(description), "",
                  "", ctx.observed)
        ctx.b.texts.append(description)
    ctx.used.add("spm")


@st.composite
def messages(draw, types: tuple[str, ...] = TYPES, dims: Dimensions = Dimensions(),
             versions: tuple[str, ...] = VERSIONS):
    """One ORU^R01 of a type in *types*, an HL7 version in *versions*, shapes allowed by *dims*."""
    # Each allowed shape in about half of the messages: a bench can tell which one fails.
    dims = Dimensions(**{name: getattr(dims, name) and draw(st.booleans()) for name in Dimensions.names()})
    doc_type = draw(st.sampled_from(types))
    version = draw(st.sampled_from(versions))
    charset = draw(st.sampled_from(tuple(CHARSETS) if dims.latin1 else ("UNICODE UTF-8",)))
    used: set[str] = set()
    if CHARSETS[charset] == "iso-8859-1":
        used.add("latin1")
    precision = draw(st.sampled_from("msf")) if dims.time_precision else "s"
    if precision != "s":
        used.add("time_precision")
    if dims.sparse:
        used.add("sparse")
    b = _Builder(version)
    application, facility = FACILITY[doc_type]
    patient, birth, female = draw(people(patient=True))
    interpreter, attending, referrer = draw(doctors()), draw(doctors()), draw(doctors())
    reported, sent = draw(_times())
    observed = reported - dt.timedelta(hours=draw(st.integers(1, 48)))
    admitted = observed - dt.timedelta(days=draw(st.integers(1, 30)))
    offset = draw(st.booleans())

    def ts(when: dt.datetime) -> str:
        return _ts(when, offset, precision)

    ctx = _Context(b=b, rnd=random.Random(draw(st.integers(0, 2 ** 32 - 1))), dims=dims, used=used,
                   utf8=CHARSETS[charset] == "utf-8",
                   placer=f"PR-{draw(st.integers(1, 99999)):05d}",
                   accession=f"{doc_type[:2]}26-{draw(st.integers(1, 99999)):05d}",
                   observed=ts(observed), reported=ts(reported), referrer=referrer, interpreter=interpreter,
                   prt_roles=_prt_roles(draw, dims, b.v27, doc_type, used), obr32_id_only=draw(st.booleans()))

    b.add("MSH", "^~\\&", application, facility, "FSEBRIDGE", "RT", ts(sent), "",
          "ORU^R01" if version == "2.3" else "ORU^R01^ORU_R01",
          f"{doc_type}{draw(st.integers(1, 999999)):06d}", "P", version, "", "", "", "", "ITA", charset)
    draw(_patient(ctx, patient, birth, female, facility))
    draw(_visit(ctx, attending, facility, doc_type == "LDO", (ts(admitted), ts(observed))))
    ctx.orc()
    if doc_type == "LAB":
        draw(_lab(ctx))
    else:
        draw(_narrative_report(ctx, doc_type))

    text = "\r".join(b.segments) + "\r"
    return Generated(raw=text.encode(CHARSETS[charset]), doc_type=doc_type, version=version, charset=charset,
                     family=patient.family, given=patient.given, fiscal_code=patient.fiscal_code,
                     features=used, texts=b.texts, absent=b.absent, notices=b.notices)
