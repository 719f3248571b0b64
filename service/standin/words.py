"""The stand-in's "hearing": which word a window of audio is heard as (pure).

Two choices, one per use. `hashed_word` names the window by its hash (`w91d3a091`): unique per window, so a test can
tell every word of a call apart and notice audio that went to the wrong call; the tests' default. `readable_word`
picks one of `WORDS`, a fixed list of 2756 common English words, by the same hash: the same audio gives the same
words and different audio different ones, so a transcript reads like one and still shows what audio arrived, in
order. Neither is speech recognition, and whatever shows readable words says they are placeholders.

Either way a window made by `said` is heard as the word it spells: how a test (or a demo) makes a caller say what
it needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

WordChooser = Callable[[bytes], str]  # a window of audio (not silent) -> the word heard in it

SAY: Final = b"say:"  # a window that starts so is heard as the word it spells (`said`)
WINDOW_BYTES: Final = 4000  # the tests' window: half a second of 8 kHz mu-law

# A block of words, split once: it reads and diffs as a word list, where 2,756 quoted strings would not.
WORDS: Final = tuple(
    """
able about above abroad absence absorb abstract academy accent accept access accident account accurate achieve
acid acorn acquire across act action active actor actual adapt add addition address adequate adjust admire admit
adopt adult advance adventure advice advise aerial affair affect affection afford after afternoon again against
age agency agenda agent agile ago agree ahead aim air airline airport alarm album alert alive all alley alliance
allow ally almond almost alone along alpine already also alter although always amateur amazing amber ambition
amend amount ample amuse analysis analyst anchor ancient angel anger angle animal ankle anniversary announce
annual another answer antenna anthem anxiety anybody anyone anything anyway apart apartment apology apparent
appeal appear appetite applause apple apply approach approve apron arcade arch archive area arena argue argument
arise arm armchair army aroma around arrange arrival arrive arrow art article artist artwork ashore aside ask
asleep aspect aspire assemble asset assist assume athlete atlas atmosphere atom attach attack attempt attend
attention attic attitude attract auction audience audio aunt author auto autumn avenue average avocado avoid
awake award aware away awesome awning axis baby back backpack backyard bacon bad badge bag bait bake bakery
balance balcony ball ballet balloon ballot bamboo banana band bandage bank banner bar barely bargain barn barrel
base baseball basement basic basin basket batch bath bathtub battery battle bay beach beacon beam bean bear
beard beat beautiful beauty because become bed bedroom bedtime beef beetle before begin behalf behavior behind
belief believe bell belong beloved below belt bench bend benefit berry beside best better between beverage
beyond bias bicycle big bike bill binder biology bird birth birthday bishop bit bite bitter black blade blame
blank blanket blaze blend bless blind block blood bloom blossom blouse blow blue blueprint blush board boast
boat body boil bold bone bonfire bonus book booklet boost boot border born borough borrow boss both bother
bottle bottom bounce boundary bouquet bowl bowling box boy bracelet bracket brain brake branch brand brave bread
breadth break breakfast breath breathe breeze brick bridge bridle brief bright brilliant bring brisk broad
broadcast brochure broken bronze brook broom brother brown brush bubble bucket buckle buddy budget buffalo
buffet build building bulb bulletin bumper bunch bundle burden bureau burn bus bush business busy butler butter
butterfly button buy cabbage cabin cable cactus cafe cake calculate calendar calf call calm camera camp campaign
campus can canal candidate candle candy canoe canvas canyon cap capable capital capsule captain caption car
caravan carbon card care career careful cargo carnival carpenter carpet carriage carrot carry cartoon cartridge
carve case cash cashier casino castle casual cat catalog catch category caterpillar cathedral cattle cause
caution cavern cedar ceiling celebrate celery cell cellar cement center central century ceramic cereal ceremony
certain chain chair chalk challenge chamber champagne champion chance change channel chaos chapel chapter
charcoal charge chariot charity charm chart chase cheap check checkers cheek cheer cheerful cheese chef chemist
cherry chess chest chestnut chicken chief child chili chimney chocolate choice choose chop chorus chunk church
cider cinema cinnamon circle circuit circus citizen city civil claim class classic classroom clay clean clear
clerk clever click client cliff climate climax climb climber clinic clock close closet cloth clothing cloud
clover club clue cluster coach coal coast coastal coat cobalt cockpit cocoa coconut code coffee coin cold
collapse collar collect college colony color column combat combine come comedy comet comfort command comment
commerce committee common compact companion company compare compass complete compose computer concept concert
concrete condition confetti confirm connect consent consider console constant consult contain content contest
context continue contract control convert cook cookbook cookie cool cooper copper copy coral corn corner correct
corridor cosmic cost costume cottage cotton couch council count counter country county couple courage course
court courtyard cousin cover cow coward crack cradle craft crafty cranberry crane crash crater crayon crazy
cream create credit creek crest crew cricket crisp critic croissant crop cross crossing crowd crown crumb crunch
cry crystal cube cuckoo cuisine culture cup cupboard cupcake curb curious curl current curtain curve cushion
custom customer cut cycle cylinder dad daily dairy daisy damage damp dance dancer danger dark dashboard data
date daughter dawn day daylight dead deal dear debate debut decade decent decide decimal deck decorate deep deer
defend degree delay deliver delta deluxe demand denim dense dentist deny depend deposit depot depth deputy
descend describe desert deserve design desire desk desktop dessert destiny detail detect detour develop device
diagram dial dialog diameter diamond diary dice dictionary diesel diet differ different difficult dig digest
digital dignity diner dinner dinosaur diploma dipper direct direction dirt dirty discount discover discuss dish
distance dive divide divine dizzy dock doctor document dog dollar dolphin domain domestic donkey door doorway
dormitory double doubt dove down downtown dozen draft drag dragon dragonfly drama draw drawer drawing dream
dress dresser drift drink drive driver driveway drizzle drop drowsy drum dry duck dumpling dune durable during
dust duty dwelling dynamic each eager eagle ear early earn earnest earring earth ease easel east eastern easy
easygoing eat echo eclipse ecology economy edge edible edition educate effect effort egg eight either elastic
elbow elder elect electric elegant elephant elevator eleven else email ember embrace emerald emerge emotion
emperor employ empty enable end endless enemy energy engage engine engineer enjoy enormous enough ensure enter
entire entrance entry envelope epic episode equal equator equip erase errand error escape essay essence estate
eternal even evening event ever every evidence evident evolve exact exam example excel excellent except exchange
excite excuse exercise exhibit exist exit exotic expand expect expedition expense expert explain explode explore
export express extra eye fable fabric face fact factor factory faculty fade fail fair fairy faithful falcon fall
false familiar family famous fan fancy fantasy far farewell farm farmer fashion fast fat father fault favor
favorite fear feasible feast feather feature federal fee feed feel fellow female fence fern ferry festival fever
few fiber fiction fiddle field fifteen fifty fig fight figure file fill film filter final finance find fine
finger finish fire firefly fireplace firm first fish fishing fit five fix flag flame flannel flash flashlight
flat flavor fleet flexible flicker flight flipper float flock flood floor flour flow flower fluffy flurry flute
fly foam focus fold folder foliage folk follow food foot football footprint force forecast forehead forest
forever forge forget fork form formal formula fortress fortune forty forward fossil foster fountain fox fraction
fragile frame freckle free freeze freight frequent fresh freshman friend friendly frog front frost frozen fruit
frying fudge fuel full fun fund funny fur furniture future gain galaxy gallery gallon game garage garden
gardener garlic garment gas gate gateway gather gazelle gear gem general generous genius gentle genuine
geography gesture ghost giant gift ginger gingerbread giraffe girl give glacier glad glance glass glimpse
glitter global globe gloomy glossy glove glow glue goal goat goggles gold golden golf gondola good goose
gorgeous gorilla gospel gourmet govern gown grab graceful grade gradual graduate grain grammar grand granite
grant grape grass grateful gravel gravy gray great green greenhouse greet greeting grid grill grin grocery
ground group grove grow guard guardian guess guest guidance guide guitar gull gust gymnasium habit habitat hair
haircut half hall hallway hammer hammock hamster hand handbag handle handsome hang happen happy harbor hard
hardware harmony harp harvest hat hatch have hawk hazard hazel head headline headphone health hear heart heat
heater heaven heavy hectic hedge height hello helmet help hen herb here heritage hero heron hexagon hide high
highway hiking hill hilltop hinge hippo hire history hit hobby hold holder hole holiday hollow home homework
honest honey honor hook hope horizon horn hornet horse hospital host hostel hot hotel hour house household hover
huge human humble hummingbird humor hundred hungry hunt hurdle hurricane hurry husband husky hydrant ice iceberg
icicle idea identity idle igloo illusion image imagine immense impact import impress improve inch incline
include income increase index indigo indoor industry infant inform inherit initial inkwell inlet innocent insect
inside insight inspire install instance instant instead instrument intense interior invent invite iron island
issue item ivory jacket jaguar jam jar jasmine jeans jelly jewel jewelry jigsaw job jockey jogging join joke
journal journey jovial joy judge judo juggle juice jukebox jumbo jump junction jungle junior jury just kangaroo
kayak keen keep kernel kettle key keyboard keynote kick kid kidney kind kindness king kingdom kiosk kitchen kite
kiwi knee knife knight knock knot know knuckle koala label laboratory lace ladder lady lagoon lake lamp land
landmark landscape lane language lantern laptop large laser last late lattice laugh launch laundry lava lavender
law lawful lawn lawyer layer lazy lead leader leaf leaflet learn least leather leave left leg legal legend
leisure lemon lemonade lend length lens leopard lesson letter lettuce level library lid life lifeboat lifetime
lift light lighthouse like lilac lime limestone limit limousine line linen lineup lion lip liquid list listen
little live lively lizard load loan lobster local lock locker locket lodge lofty log lonely long look loose lose
loss lot lottery lotus loud love low lucky lullaby lumber lunar lunch luncheon luxury lyric machine magazine
magic magnet mail mailbox main majestic major make male mall mammal manage mango manner mansion manual map maple
marathon marble march margin marine mark marker market marry marsh marvel mascot mask mass master match material
matter mattress maximum maybe mayor meadow meal mean measure meat mechanic medal media medical meditate medium
meet melody melon member membership memory mentor menu merchant mercy merit mermaid merry message metal meteor
method microwave midday middle midnight might migrate mild milestone military milk mill million mind mine
miniature minimum minor mint minute miracle mirror mischief miss mistake mitten mix mobile model modern modest
moisture molecule moment monarch money monitor monkey month monument mood moon moonlight morning morsel mosaic
mosquito moss motel mother motion motive motor mountain mouse mouth move movement mover movie much mud muffin
multiply mumble mural muscle museum mushroom music musical must mustard mutual mystery myth nail name napkin
narrator narrow nation native nature navy near nearby neat neck necklace nectar need needle negotiate neighbor
nephew nerve nervous nest net network never new newborn news newspaper next nice nickel night nightfall nimble
nine noble nobody noise nomad none noodle noon normal north northern nose note notebook nothing notice nourish
novel novelty now number numeral nurse nursery nut nutmeg oak oasis oatmeal obey object observe obtain occasion
ocean octopus odyssey offer office officer offspring often oil okay old olive olympic omelet once one onion only
opal open opening opera opinion optimist orange orbit orchard orchestra orchid order ordinary organ organic
origin ornament other otter outcome outdoor outfit outlet outline outside oven over overcoat overflow overlook
owl owner oxygen oyster pace pack package paddle page pageant paint paintbrush pair pajamas palace palm pamphlet
pan pancake panda panel panorama panther papaya paper parachute parade paradise paragraph parallel parcel parent
park parrot parsley part particle partner party pass passenger passport past pasta paste pastry pasture path
patient patio patrol pattern pause pavement pay payment peace peaceful peach peak peanut pear pebble pelican pen
pencil penguin people pepper peppermint percent perfect perform perfume period permit person persuade pet petal
petroleum pharmacy pheasant phone photo physics pianist piano pick pickle picnic picture pie piece pig pigeon
pile pilgrim pillar pillow pilot pin pinch pine pineapple pink pinwheel pioneer pipe pistachio pitch pitcher
pizza place plain plan planet plant plantation plate platform play playful playground plaza pleasant please
plenty plot plum plumber pocket poem poet poetry point polar police polish polite pollen pond pony pool poor
poppy popular porcelain porch port portable portion portrait position possess post postage postcard pot potato
pottery poultry pound powder power practice prairie praise precious predict preface prefer premium prepare
presence present preserve president press pretend pretty pretzel prevent price pride primary prince print prism
private prize probable problem proceed process produce profile profit program progress project promise proof
proper property prospect protect protein proud prove province prudent public publish pudding pull pulse pump
pumpkin punch punctual pupil puppet puppy purchase purple purpose pursue push put puzzle pyramid quail quality
quantity quarrel quarter quartz queen question quick quiet quilt quite quiver quota rabbit raccoon race radiant
radio radish raft rail railroad rain rainbow rainfall raise raisin ranch rancher range rapid rare rate rather
rattle raven raw razor reach read reader ready real realm reason rebuild recall receipt receive recess recipe
record recycle red reduce reef reflect refresh region regular rehearse relative relax release reliable relish
remain remedy remember remote remove renew rent repair repeat reply report rescue reserve resident resort
respect rest restore result retire return review reward rhubarb rhythm ribbon rice rich riddle ride ridge rifle
right ring ripple rise risk ritual rival river riverbank road roadway robin robot rock rocket rocky rodeo role
roll romance roof room rooster root rope rose rotate rough round route row rowboat royal rubber ruby rule rumble
run runner rural rush rustic sad saddle sadness safari safe saffron sail sailboat sailor salad salary sale
salmon salt salute same sample sand sandal sandwich sapphire satellite satin saucer sausage save savings scale
scarf scene scenic scholar school science scissors scoop scooter score scramble screen scribble sculpture sea
seagull search seashell seaside season seat second secret section secure see seed seek sell senator send senior
sense sensible sentence sequel sequence serene series serpent serve service session set settle seven seventy
shade shadow shake shallow shamrock shape share sharp sheep sheet shelf shell shelter shepherd sherbet shift
shimmer shine ship shipment shirt shoe shop shore short shoulder shout show shower shrimp shuttle side sidewalk
sign signal silence silent silk silly silo silver simmer simple sincere sing single sink siren sister sit size
skate sketch skill skin skirt sky skyline sleep sleepy sleeve slender slice slide slipper slope slow small smart
smell smile smoke smooth smoothie snack snail snake snapshot snow snowflake soap soapbox soccer social society
sock sofa soft soil solar soldier solemn solid solve sombrero some son song sonnet soon sort sound soup south
souvenir space spacious spaghetti sparkle sparrow speak speaker special spectrum speed spell spend sphere spice
spider spinach spirit splendid sponge spoon sport spot spotless spring sprinkle sprout square squash squirrel
stable stadium staff stage stagecoach stair staircase stallion stamp stand stapler star starfish start state
station statue stay steady steam steamboat steel step stick sticker still stock stomach stone stop storage store
stork storm story stove straight strange strawberry stream street strong student studio study stuff sturdy style
subject submarine suburb subway sugar suit summer summit sun sunflower sunlight sunrise sunset sunshine superb
supper supply support sure surface surgeon surprise swallow swan sweater sweet swift swim symbol symphony syrup
table tablet taco tadpole tail tailor take talent talk tall tambourine tangerine tank tape tapestry target task
taste tax taxi tea teach teacher team teapot teaspoon telescope tell temple ten tender tennis tent term terrace
test text textile thank thankful theater theory thick thimble thin thing think third thirsty thirty thistle
thought thoughtful thread three thrill throat throne throw thumb thunder ticket tickle tide tidy tie tiger
timber time timely tiny tip tired title toad toast today toddler toe toffee together tolerant tomato tomorrow
tone tongue tonight tool toolbox tooth toothbrush top topaz topic torch tornado tortoise total touch tour towel
tower town toy track tractor trade tradition traffic trailer train tranquil travel tray treasure treat tree
trend trial triangle tribute tricycle trinket trip trolley trophy tropical trousers truck true trumpet trust
truth try tube tugboat tulip tuna tune tunnel turbine turkey turn turtle tuxedo twelve twenty twice twilight
type typical umbrella umpire uncle under unicorn uniform union unique unit universe until upbeat update upper
upset upstairs urban use useful usual utensil vacation valid valley value van vanilla vapor vast vegetable
vehicle velvet vendor venture veranda verdict version very vessel veteran vibrant victory video view vigor villa
village vinegar vintage violet violin visible vision visit vital vivid vocal voice volcano volume vote voyage
waffle wage wagon wait waiter wake walk wall wallet walnut walrus wander want warden wardrobe warehouse warm
warrior wash wasp watch water waterfall watermelon wave wax way weak wealth wealthy wear weasel weather wedding
week weekday weekend weight welcome welfare well west western wet whale wharf wheat wheel whisper whistle white
whole wholesome wide wife wild wildlife will willow win wind windmill window windy wine wing winter wire wisdom
wise wish wizard wolf wombat wonder wonderful wood woodland wool word work workshop world worry worthy wrapper
wren wristwatch write wrong yacht yard year yearly yearn yellow yes yesterday yet yogurt yolk yonder young youth
zealous zebra zero zigzag zipper zone zucchini
    """.split()  # noqa: SIM905
)


def hashed_word(window: bytes) -> str:
    """The window's word as a hash of its audio (`w` and 8 hex digits), or the word a `said` window spells."""
    spelt = _spelt(window)
    return spelt if spelt is not None else "w" + hashlib.sha256(window).hexdigest()[:8]


def readable_word(window: bytes) -> str:
    """The window's word as one of `WORDS`, picked by a hash of its audio, or the word a `said` window spells."""
    spelt = _spelt(window)
    if spelt is not None:
        return spelt
    return WORDS[int.from_bytes(hashlib.sha256(window).digest()[:8], "big") % len(WORDS)]


def said(word: str, window_bytes: int = WINDOW_BYTES) -> bytes:
    """A window of (non-silent) audio heard as `word`: how a test makes a caller say what it needs ("four one one
    one ...") where the hashed words cannot."""
    spelt = SAY + word.encode() + b"\0"
    return spelt + bytes([0x10]) * (window_bytes - len(spelt))


def saying(text: str, window_bytes: int = WINDOW_BYTES) -> bytes:
    """`text` as audio heard word by word (`said`), then a silent window: a sentence, and its pause."""
    return b"".join(said(word, window_bytes) for word in text.split()) + bytes([0xFF]) * window_bytes


def _spelt(window: bytes) -> str | None:
    if not window.startswith(SAY):
        return None
    return window[len(SAY) :].split(b"\0", 1)[0].decode()
