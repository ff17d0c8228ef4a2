import sys

import balloons

app = balloons.App()


@app.task(timeout=30)
def shout(word: str) -> str:
    return word.upper() + "!"


if __name__ == "__main__":
    print(shout.submit(sys.argv[1]).result(timeout=30))
