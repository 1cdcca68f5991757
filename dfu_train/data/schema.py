"""Facts of the clinical file format: column names, leakage, labels, image file names."""

from __future__ import annotations

import re
from types import MappingProxyType

METADATA_CSV = "DataMaster_Processed_V12_WithMissing.csv"
BBOX_DEPTH_CSV = "bounding_box_depth.csv"
BBOX_THERMAL_CSV = "bounding_box_thermal.csv"

#: modality name -> (image folder, camera whose boxes locate the wound)
IMAGE_FOLDERS = MappingProxyType(
    {
        "depth_rgb": ("Depth_RGB", "depth"),
        "depth_map": ("Depth_Map_IMG", "depth"),
        "thermal_map": ("Thermal_Map_IMG", "thermal"),
        "thermal_rgb": ("Thermal_RGB", "thermal"),
    }
)
IMAGE_MODALITIES = tuple(IMAGE_FOLDERS)
MODALITIES = ("metadata", *IMAGE_MODALITIES)

PATIENT, APPT, DFU = "Patient#", "Appt#", "DFU#"
SAMPLE_KEY = (PATIENT, APPT, DFU)
LABEL = "Healing Phase Abs"
FINE_LABEL = "Healing Phase"
CONFIDENCE = "Phase Confidence (%)"

CLASS_NAMES = ("I", "P", "R")
LABEL_CODES = MappingProxyType({name: code for code, name in enumerate(CLASS_NAMES)})

#: every column of the metadata CSV, in file order
COLUMNS = (
    "ID", "Patient#", "Age", "Sex (F:0, M:1)", "Weight (Kg)", "Height (cm)", "Smoking",
    "Alcohol Consumption", "Habits Score", "Type of Diabetes", "Heart Conditions",
    "Cancer History", "Sensory Peripheral", "Clinical Score", "Number of DFUs", "DFU#",
    "Side (Left:0, Right:1)", "Foot Aspect", "Location",
    "Location Grouped (Hallux:1,Toes,Middle,Heel,Ankle:5)", "Onset (Days)",
    "No Toes Deformities", "Bunion", "Claw", "Hammer", "Charcot Arthropathy",
    "Flat (Pes Planus) Arch", "Abnormally High Arch", "No Arch Deformities", "Foot Score",
    "Appt#", "Appt Days", "Wound Centre Temperature (°C)", "Peri-Ulcer Temperature (°C)",
    "Intact Skin Temperature (°C)", "Wound Centre Temperature Normalized (°C)",
    "Peri-Ulcer Temperature Normalized (°C)", "Pain Level", "Type of Pain",
    "Type of Pain Grouped", "Type of Pain2", "Type of Pain_Grouped2", "Wound Tunneling",
    "Exudate Amount (None:0,Minor,Medium,Severe:3)",
    "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)", "Odor",
    "No Peri-ulcer Conditions (False:0, True:1)", "Erythema at Peri-ulcer",
    "Edema at Peri-ulcer", "Pale Colour at Peri-ulcer", "Maceration at Peri-ulcer",
    "Wound Score", "Dressing", "Dressing Grouped", "No Foot Abnormalities", "Foot Hair Loss",
    "Foot Dry Skin", "Foot Fissure Cracks", "Foot Callus", "Thickened Toenail",
    "Foot Fungal Nails", "Leg Score", "No Offloading", "Offloading: Therapeutic Footwear",
    "Offloading: Scotcast Boot or RCW", "Offloading: Half Shoes or Sandals",
    "Offloading: Total Contact Cast", "Offloading: Crutches, Walkers or Wheelchairs",
    "Offloading Score", "Healing Phase", "Phase Confidence (%)", "Healing Phase Abs",
)

OFFLOADING = tuple(c for c in COLUMNS if c.startswith("Offloading"))

#: columns that must never reach a model: identifiers, the label and its proxies, treatment decisions
NEVER_FEATURES = frozenset(
    {
        "ID", PATIENT, APPT, DFU, "Appt Days", "Location", FINE_LABEL, CONFIDENCE, LABEL,
        "Type of Pain", "Type of Pain2", "Type of Pain_Grouped2", "Dressing", "No Offloading",
        *OFFLOADING,
    }
)

#: categorical columns and the values a valid file holds (anything else is unknown -> missing)
CATEGORIES = MappingProxyType(
    {
        "Sex (F:0, M:1)": ("F", "M"),
        "Side (Left:0, Right:1)": ("Left", "Right"),
        "Foot Aspect": ("Plantar", "Medial", "Dorsal", "Lateral"),
        "Location Grouped (Hallux:1,Toes,Middle,Heel,Ankle:5)": (
            "Hallux", "toes", "middle", "Heel", "ankle",
        ),
        "Exudate Appearance (Serous:1,Haemoserous,Bloody,Thick:4)": (
            "Serous", "Haemoserous", "Bloody", "Thick",
        ),
        "Odor": ("NoOdor", "Unpleasant"),
        "Type of Pain Grouped": (
            "NoPain", "ChronicPain", "PressureAndMovement", "ThrobbingPain", "GeneralAches",
            "ShootingPain", "PhantomAndUnusualSensations", "LocalizedPain", "SharpAndIntensePain",
        ),
        "Dressing Grouped": (
            "Antiseptic", "AbsorbentDressing", "NoDressing", "BasicDressing", "AdvancedMethod",
            "BandAid", "Other",
        ),
    }
)

#: columns kept as text although never features ("0" there means "none", not missing)
TEXT_COLUMNS = frozenset({"Location", "Type of Pain", "Type of Pain2", "Type of Pain_Grouped2",
                          "Dressing", FINE_LABEL, LABEL})

CATEGORICAL_FEATURES = tuple(CATEGORIES)
NUMERIC_FEATURES = tuple(
    c for c in COLUMNS if c not in NEVER_FEATURES and c not in CATEGORIES and c not in TEXT_COLUMNS
)
FEATURES = tuple(c for c in COLUMNS if c in CATEGORIES or c in NUMERIC_FEATURES)

#: columns read as numbers; a non-numeric value there is a data error
NUMERIC_COLUMNS = tuple(
    c for c in COLUMNS if c not in CATEGORIES and c not in TEXT_COLUMNS and c != "ID"
)

TEMPERATURES = (
    "Wound Centre Temperature (°C)", "Peri-Ulcer Temperature (°C)",
    "Intact Skin Temperature (°C)", "Wound Centre Temperature Normalized (°C)",
    "Peri-Ulcer Temperature Normalized (°C)",
)

BBOX_COLUMNS = (
    "Filename", "Patient#", "Appt#", "DFU#", "DebriStat", "Camera", "Angle",
    "Bounding Box Number", "Xmin", "Ymin", "Xmax", "Ymax",
)

#: e.g. 10_P257001ADMW.png = patient 257, appointment 00, DFU 1, after debridement, depth, middle, wide
FILENAME_PATTERN = re.compile(
    r"^(?P<n>\d+)_P(?P<patient>\d{3})(?P<appt>\d{2})(?P<dfu>\d)(?P<debri>[BA])"
    r"(?P<camera>[DT])(?P<side>[RML])(?P<zoom>[ZW])\.png$"
)
