"""A room participant made with aiortc (the Python WebRTC stack), for interop tests.

  python3 participant.py view    URL ROOM USERNAME PUBLISHER   prints "frame R G B" per decoded frame
  python3 participant.py publish URL ROOM USERNAME R,G,B       publishes a solid colour (video only)

It speaks the room protocol over one WebSocket (see signaling/protocol): join, then play a
publisher's stream (the publisher offers, this side answers) or publish one (this side offers to
each viewer). aiortc does not trickle: its description carries its candidates; the other side's
trickled candidates are added as they come. Runs until killed or --seconds pass.
"""

import argparse
import asyncio
import json
import sys

import av
import numpy
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.sdp import candidate_from_sdp


def log(*args):
    print(*args, file=sys.stderr, flush=True)


class SolidColour(VideoStreamTrack):
    """320x240 frames of one colour."""

    def __init__(self, rgb):
        super().__init__()
        self.picture = numpy.zeros((240, 320, 3), numpy.uint8)
        self.picture[:] = rgb

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.picture, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


async def add_candidate(pc, msg):
    line = msg.get("candidate") or ""
    if not line:
        return
    candidate = candidate_from_sdp(line.split(":", 1)[1] if line.startswith("candidate:") else line)
    candidate.sdpMLineIndex = msg.get("sdp_m_line_index")
    candidate.sdpMid = msg.get("sdp_mid")
    if candidate.sdpMid is None:
        # aiortc finds the transceiver by mid: take it from the m-line index.
        transceivers = pc.getTransceivers()
        index = candidate.sdpMLineIndex or 0
        if index < len(transceivers):
            candidate.sdpMid = transceivers[index].mid
    await pc.addIceCandidate(candidate)


async def print_frames(track):
    while True:
        frame = await track.recv()
        picture = frame.to_ndarray(format="rgb24")
        h, w, _ = picture.shape
        centre = picture[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)
        print("frame %d %d %d" % tuple(int(c) for c in centre), flush=True)


async def send(ws, **msg):
    await ws.send(json.dumps(msg))


async def join(ws, room, username):
    await send(ws, type="join", room=room, username=username)
    while True:
        msg = json.loads(await ws.recv())
        if msg["type"] == "state":
            return msg
        if msg["type"] in ("failed", "error"):
            raise SystemExit("join refused: %s" % msg)


async def view(ws, publisher):
    await send(ws, type="play", participant=publisher, stream="main")
    pcs = {}
    tasks = []
    async for text in ws:
        msg = json.loads(text)
        kind = msg["type"]
        if kind == "session-started":
            pc = RTCPeerConnection()
            pcs[msg["session"]] = pc

            @pc.on("track")
            def on_track(track, session=msg["session"]):
                log("track", track.kind, "in", session)
                if track.kind == "video":
                    tasks.append(asyncio.ensure_future(print_frames(track)))

        elif kind == "sdp" and msg["session"] in pcs:
            pc = pcs[msg["session"]]
            desc = msg["description"]
            for line in desc["sdp"].splitlines():
                if line.startswith("a=fingerprint:"):
                    print("fingerprint " + line.split(":", 1)[1], flush=True)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=desc["sdp"], type=desc["type"]))
            await pc.setLocalDescription(await pc.createAnswer())
            await send(
                ws,
                type="sdp",
                session=msg["session"],
                description={"type": "answer", "sdp": pc.localDescription.sdp},
            )
        elif kind == "ice" and msg["session"] in pcs:
            await add_candidate(pcs[msg["session"]], msg)


async def publish(ws, rgb):
    await send(ws, type="publish", stream="main", audio=False, video=True)
    pcs = {}
    async for text in ws:
        msg = json.loads(text)
        kind = msg["type"]
        if kind == "session-request":
            pc = RTCPeerConnection()
            pcs[msg["session"]] = pc
            pc.addTransceiver(SolidColour(rgb), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            await send(
                ws,
                type="sdp",
                session=msg["session"],
                description={"type": "offer", "sdp": pc.localDescription.sdp},
            )
            log("offered", msg["session"], "to", msg["viewer"])
        elif kind == "sdp" and msg["session"] in pcs:
            desc = msg["description"]
            await pcs[msg["session"]].setRemoteDescription(
                RTCSessionDescription(sdp=desc["sdp"], type=desc["type"])
            )
        elif kind == "ice" and msg["session"] in pcs:
            await add_candidate(pcs[msg["session"]], msg)
        elif kind == "session-ended" and msg["session"] in pcs:
            await pcs.pop(msg["session"]).close()


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["view", "publish"])
    parser.add_argument("url")
    parser.add_argument("room")
    parser.add_argument("username")
    parser.add_argument("target", help="publisher to view, or R,G,B to publish")
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    async with websockets.connect(args.url) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        await join(ws, args.room, args.username)
        print("joined", flush=True)
        if args.mode == "view":
            work = view(ws, args.target)
        else:
            work = publish(ws, [int(c) for c in args.target.split(",")])
        try:
            await asyncio.wait_for(work, args.seconds)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
