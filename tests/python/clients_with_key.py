"""The official OpenAI and Ollama Python clients against a Corral gateway with an API key.

Usage: clients_with_key.py BASE_URL API_KEY MODEL
Prints one JSON line of what each client got; exits non-zero on any failure.
"""
import json
import sys

import ollama
import openai


def main() -> None:
    base, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
    out = {}

    oa = openai.OpenAI(base_url=f"{base}/v1", api_key=key)
    reply = oa.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    out["openai_text"] = reply.choices[0].message.content
    out["openai_usage"] = reply.usage.completion_tokens
    chunks = oa.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    out["openai_stream"] = "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    try:
        openai.OpenAI(base_url=f"{base}/v1", api_key="crl_wrong").chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
        out["openai_bad_key"] = "accepted"
    except openai.AuthenticationError as e:
        out["openai_bad_key"] = e.status_code

    ol = ollama.Client(host=base, headers={"Authorization": f"Bearer {key}"})
    reply = ol.chat(model=model, messages=[{"role": "user", "content": "hi"}])
    out["ollama_text"] = reply["message"]["content"]
    out["ollama_eval_count"] = reply["eval_count"]
    parts = ol.chat(model=model, messages=[{"role": "user", "content": "hi"}], stream=True)
    out["ollama_stream"] = "".join(p["message"]["content"] for p in parts)
    out["ollama_models"] = [m["model"] for m in ol.list()["models"]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
