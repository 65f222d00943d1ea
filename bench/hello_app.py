"""The bare peer of the cold-start benchmark: FastAPI with one route, nothing else."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/api/health")
async def health() -> dict[str, bool]:
    return {"ok": True}
