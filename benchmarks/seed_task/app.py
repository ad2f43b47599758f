"""The seed's L1 tutorial loop (../shared/seeds: SimpleNet 784-128-10, torchvision
Dataset + ToTensor + DataLoader, SGD lr 0.01, batch 64, `l1_lambda * sum|p|` in the loss, a
test pass after every epoch) as the Hydra task a user would write from it, swept by the stock
hydra-optuna-sweeper (conf/config.yaml). Only what a sweep needs is added: Fashion-MNIST from
`data_root` without downloading, `epochs` and `l1_lambda` from the config, and the last test
accuracy returned as the objective. benchmarks/sweep_speed.py times it against l1sweep.

    python benchmarks/seed_task/app.py -m data_root=/path/with/FashionMNIST/raw
"""

import hydra
import torch
import torch.nn as nn
import torch.optim as optim
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class SimpleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 128)
        self.fc2 = nn.Linear(128, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = x.view(-1, 28 * 28)
        x = self.relu(self.fc1(x))
        return self.fc2(x)


@hydra.main(config_path="conf", config_name="config", version_base=None)
def main(cfg: DictConfig) -> float:
    transform = transforms.ToTensor()
    train_dataset = datasets.FashionMNIST(root=cfg.data_root, train=True, transform=transform)
    test_dataset = datasets.FashionMNIST(root=cfg.data_root, train=False, transform=transform)
    train_loader = DataLoader(train_dataset, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_dataset, batch_size=64)

    model = SimpleNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01)
    l1_lambda = cfg.l1_lambda

    def train(epoch):
        model.train()
        total_loss = 0
        for data, target in train_loader:
            optimizer.zero_grad()
            output = model(data)
            loss = criterion(output, target)
            l1_norm = sum(torch.abs(p).sum() for p in model.parameters())
            loss = loss + l1_lambda * l1_norm
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        print(f"Epoch {epoch}, Average Loss: {total_loss / len(train_loader):.4f}")

    def test():
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for data, target in test_loader:
                _, predicted = torch.max(model(data).data, 1)
                total += target.size(0)
                correct += (predicted == target).sum().item()
        accuracy = 100.0 * correct / total
        print(f"Test Accuracy: {accuracy:.2f}%")
        return accuracy

    for epoch in range(1, cfg.epochs + 1):
        train(epoch)
        accuracy = test()
    return accuracy


if __name__ == "__main__":
    main()
