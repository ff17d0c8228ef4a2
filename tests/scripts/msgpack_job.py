import sys

import balloons

app = balloons.App(serializer="msgpack")


@app.task(timeout=30)
def reverse(data: bytes) -> bytes:
    return data[::-1]


if __name__ == "__main__":
    print(reverse.submit(sys.argv[1].encode() + b"\xff").result(timeout=30))
