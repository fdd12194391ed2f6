"""KServe's own clients (``InferenceGRPCClient``, ``InferenceRESTClient``) against a server, typed contents
and raw: one JSON line.

Run by the integration tests with the KServe peer's venv (``benchmarks/peers``), where KServe is installed:
``python kserve_client.py --url URL --model NAME --rows rows.json [--transport grpc|rest] [--version V]
[--cert C] [--api-key K]`` (rows: ``{feature: [values]}``; the URL is ``host:port`` for gRPC, ``http[s]://
host:port`` for REST, whose client names no version: the path has the model only).
"""

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig


def tensor(name: str, values: list[float], raw: bool) -> Any:
    if not raw:
        return InferInput(name, [len(values), 1], "FP64", data=values)
    made = InferInput(name, [len(values), 1], "FP64")
    made.set_data_from_numpy(np.array(values, dtype=np.float64).reshape(-1, 1), binary_data=True)
    return made


def parameter(value: Any) -> Any:
    """A gRPC ``InferParameter``'s value, or a REST parameter as it came."""
    which = getattr(value, "WhichOneof", None)
    return getattr(value, which("parameter_choice")) if which else value


async def main() -> None:
    parser = argparse.ArgumentParser()
    for flag in ("--url", "--model", "--rows", "--cert", "--api-key", "--version"):
        parser.add_argument(flag)
    parser.add_argument("--transport", choices=("grpc", "rest"), default="grpc")
    args = parser.parse_args()
    rows: dict[str, list[float]] = json.loads(Path(args.rows).read_text())
    results: dict[str, Any] = {}

    async def call(client: Any, mode: str) -> Any:
        inputs = [tensor(name, values, raw=mode == "raw") for name, values in rows.items()]
        request = InferRequest(args.model, inputs, request_id=f"kserve-{mode}", model_version=args.version)
        if args.transport == "grpc":
            metadata = [("authorization", f"Bearer {args.api_key}")] if args.api_key else None
            return await client.infer(request, headers=metadata)
        headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else None
        answered: dict[str, str] = {}
        response = await client.infer(
            args.url, request, model_name=args.model, headers=headers, response_headers=answered
        )
        # KServe's REST client reads no model_version from the body (InferResponse.from_bytes): the header
        response.model_version = response.model_version or answered.get("x-model-version")
        return response

    if args.transport == "grpc":
        client: Any = InferenceGRPCClient(
            args.url, use_ssl=bool(args.cert), root_certificates=args.cert, retries=0
        )
        results["ready"] = await client.is_server_ready()
    else:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, verify=args.cert or True))
        results["ready"] = await client.is_server_ready(args.url)
    try:
        for mode in ("typed", "raw"):
            response = await call(client, mode)
            results[mode] = {
                "id": response.id,
                "model_version": response.model_version,
                "parameters": {k: parameter(v) for k, v in (response.parameters or {}).items()},
                "outputs": {o.name: o.as_numpy().ravel().tolist() for o in response.outputs},
            }
    finally:
        await client.close()
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
