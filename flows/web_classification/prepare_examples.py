"""The labelled few-shot examples for classify_with_llm (not taken from any dataset)."""

from promptflow.core import tool

EXAMPLES = [
    {
        "url": "https://apps.example.org/notes-app",
        "text_content": "A note taking app for your phone and desktop. Download and install the application, "
        "sync notes, set reminders; new version adds widgets. Rated 4.5 stars by users.",
        "category": "App",
        "evidence": "Both",
    },
    {
        "url": "https://papers.example.org/graph-learning",
        "text_content": "Abstract: we propose a method for graph learning and evaluate it on benchmark data. "
        "Published in a peer-reviewed journal; authors, references, keywords, research results.",
        "category": "Academic",
        "evidence": "Text content",
    },
    {
        "url": "https://video.example.org/c/gardening",
        "text_content": "Subscribe to the gardening channel for new videos every week, live streams, "
        "playlists and episodes. Follow the channel for notifications; subscribers and followers.",
        "category": "Channel",
        "evidence": "Url",
    },
    {
        "url": "https://people.example.org/in/sam-lee",
        "text_content": "About me: Sam Lee, data engineer. Experience, skills, education, my portfolio and "
        "resume. Contact me, connect, follow me or send a message; connections and endorsements.",
        "category": "Profile",
        "evidence": "Both",
    },
    {
        "url": "https://films.example.org/title/harbor-lights",
        "text_content": "Harbor Lights is a drama film directed by a new director. Cast and crew, trailer, "
        "reviews, showtimes in cinemas, running time and rating of the movie.",
        "category": "Movie",
        "evidence": "Both",
    },
]


@tool
def prepare_examples() -> list[dict]:
    return EXAMPLES
