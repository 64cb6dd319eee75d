from promptflow.core import log_metric, tool


@tool
def calculate_accuracy(grades: list, evidence_grades: list) -> dict:
    total = len(grades) or 1
    accuracy = round(sum(1 for g in grades if g == "Correct") / total, 4)
    evidence = round(sum(1 for g in evidence_grades if g == "Correct") / (len(evidence_grades) or 1), 4)
    log_metric("accuracy", accuracy)
    log_metric("evidence_accuracy", evidence)
    return {"accuracy": accuracy, "evidence_accuracy": evidence}
